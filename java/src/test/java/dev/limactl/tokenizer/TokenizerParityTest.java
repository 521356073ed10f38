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

    /**
     * A tokenizer.json whose BOS and EOS are not LLaMA's (Llama 3's <|begin_of_text|>, <|end_of_text|>) takes them
     * from tokenizer_config.json beside it; the converted LLaMA tokenizer gives SentencePiece's ids.
     */
    @Test
    void specialTokensComeFromTokenizerConfigAndTheConvertedTokenizerMatches(@TempDir Path dir) throws Exception {
        String added = "[{\"id\": 0, \"content\": \"<|begin_of_text|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
                + " \"normalized\": false, \"special\": true}, {\"id\": 1, \"content\": \"<|end_of_text|>\", \"single_word\": false,"
                + " \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}]";
        Files.writeString(dir.resolve("tokenizer.json"), "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": "
                + added + ", \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"post_processor\": null, \"decoder\": null,"
                + " \"model\": {\"type\": \"WordLevel\", \"vocab\": {\"<|begin_of_text|>\": 0, \"<|end_of_text|>\": 1, \"hi\": 2, \"[UNK]\": 3},"
                + " \"unk_token\": \"[UNK]\"}}");
        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": {\"content\": \"<|end_of_text|>\"}}");
        try (Tokenizer t = Tokenizer.open(dir)) {
            assertEquals(0, t.bosId());
            assertEquals(1, t.eosId());
            assertEquals(4, t.vocabSize());
        }
        Path conv = dir.resolve("converted");
        Files.createDirectories(conv);
        Files.writeString(conv.resolve("tokenizer.json"), HfTokenizerFiles.fromSentencePiece(SpModel.parse(Files.readAllBytes(LLAMA))).toString());
        try (Tokenizer sp = Tokenizer.open(LLAMA); Tokenizer hf = Tokenizer.open(conv)) {
            for (String text : new String[] {"Hello  world", "naïve café 😀", "def f(x):\n\treturn x", "12345.678", "日本語"}) {
                assertArrayEquals(sp.encode(text), hf.encode(text), text);
                assertEquals(sp.decode(sp.encode(text)), hf.decode(hf.encode(text)), text);
            }
            assertEquals(sp.bosId(), hf.bosId());
            assertEquals(sp.eosId(), hf.eosId());
            assertEquals(sp.vocabSize(), hf.vocabSize());
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
