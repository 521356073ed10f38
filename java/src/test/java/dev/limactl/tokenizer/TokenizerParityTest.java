package dev.limactl.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Ids against the reference libraries' own output (golden files written by
 * src/test/resources/tokenizer/make_golden.py with the Python sentencepiece and tokenizers packages).
 */
class TokenizerParityTest {
    static final Path LLAMA = Path.of("../../shared/data/tokenizers/llama/tokenizer.model");
    static final Path RES = Path.of("src/test/resources/tokenizer");

    static int[] ints(JsonNode a) {
        int[] out = new int[a.size()];
        for (int i = 0; i < out.length; i++) out[i] = a.get(i).asInt();
        return out;
    }

    static List<String> strings(JsonNode a) {
        List<String> out = new ArrayList<>();
        a.forEach(n -> out.add(n.asText()));
        return out;
    }

    @Test
    void llamaSentencePieceGivesTheLibrarysIdsOnTrickyText() throws Exception {
        JsonNode g = new ObjectMapper().readTree(RES.resolve("llama_golden.json").toFile());
        try (Tokenizer t = Tokenizer.open(LLAMA)) {
            assertEquals(32000, t.vocabSize());
            assertEquals(g.get("bos").asInt(), t.bosId());
            assertEquals(g.get("eos").asInt(), t.eosId());
            for (JsonNode c : g.get("cases")) {
                String text = c.get("text").asText();
                assertArrayEquals(ints(c.get("ids")), t.encode(text), () -> "ids of " + text);
                assertEquals(strings(c.get("pieces")), t.pieces(text), () -> "pieces of " + text);
                assertEquals(c.get("decoded").asText(), t.decode(t.encode(text)), () -> "round trip of " + text);
            }
        }
    }

    @Test
    void huggingFaceTokenizerJsonGivesTheLibrarysIds() throws Exception {
        JsonNode g = new ObjectMapper().readTree(RES.resolve("small_tokenizer_golden.json").toFile());
        try (Tokenizer t = Tokenizer.open(RES.resolve("small_tokenizer.json"))) {
            assertEquals(g.get("vocab_size").asInt(), t.vocabSize());
            assertEquals(1, t.bosId());
            assertEquals(2, t.eosId());
            for (JsonNode c : g.get("cases")) {
                String text = c.get("text").asText();
                assertArrayEquals(ints(c.get("ids")), t.encode(text), () -> "ids of " + text);
                assertEquals(strings(c.get("pieces")), t.pieces(text));
            }
        }
    }

    @Test
    void directoriesAreSearchedAndMissingFilesNamed(@TempDir Path dir) throws Exception {
        Files.copy(LLAMA, dir.resolve("tokenizer.model"));
        try (Tokenizer t = Tokenizer.open(dir)) {
            assertEquals(32000, t.vocabSize());
        }
        TokenizerException e = assertThrows(TokenizerException.class, () -> Tokenizer.open(dir.resolve("nope.model")));
        assertTrue(e.getMessage().contains("nope.model does not exist"), e.getMessage());
        Path empty = Files.createDirectory(dir.resolve("empty"));
        e = assertThrows(TokenizerException.class, () -> Tokenizer.open(empty));
        assertTrue(e.getMessage().contains("neither tokenizer.model nor tokenizer.json"), e.getMessage());
        Path junk = dir.resolve("junk.model");
        Files.writeString(junk, "not a model");
        e = assertThrows(TokenizerException.class, () -> Tokenizer.open(junk));
        assertTrue(e.getMessage().contains("junk.model is not a SentencePiece model"), e.getMessage());
    }
}
