package dev.limactl.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The vocabulary a GGUF export takes from a byte-level BPE tokenizer.json (Llama 3's shape), and what it refuses. */
class GgufVocabTest {
    @TempDir
    Path dir;

    /** Llama 3's pre-tokenizer: its regex Split, then ByteLevel without GPT-2's regex. */
    static final String LLAMA3_PRE = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
            + "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\",\"invert\":false},"
            + "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}";

    Path tokenizer(String pre, String vocab, String merges, String added) throws Exception {
        Path ck = Files.createDirectories(dir.resolve("ck" + System.nanoTime()));
        Files.writeString(ck.resolve("tokenizer.json"), "{\"version\":\"1.0\",\"added_tokens\":[" + added + "],\"pre_tokenizer\":" + pre
                + ",\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{" + vocab + "},\"merges\":[" + merges + "]}}");
        return ck;
    }

    @Test
    void aLlama3TokenizerJsonGivesTokensMergesTypesAndItsPreTokenizer() throws Exception {
        Path ck = tokenizer(LLAMA3_PRE, "\"a\":0,\"b\":1,\"ab\":2,\"Ġ\":3", "[\"a\",\"b\"]",
                "{\"id\":4,\"content\":\"<|begin_of_text|>\",\"special\":true},{\"id\":5,\"content\":\"<|eot_id|>\",\"special\":true},"
                        + "{\"id\":6,\"content\":\"<tool>\",\"special\":false}");
        GgufExport.Vocab v = GgufExport.Vocab.of(ck, 5);
        assertEquals("gpt2", v.model());
        assertEquals("llama-bpe", v.pre());
        assertEquals(List.of("a", "b", "ab", "Ġ", "<|begin_of_text|>", "<|eot_id|>", "<tool>"), v.tokens());
        assertEquals(List.of(1, 1, 1, 1, 3, 3, 4), v.types());
        assertEquals(List.of("a b"), v.merges());  // a pair as newer tokenizers write it
        assertNull(v.scores());
        // LIMA's own EOT when the tokenizer.json does not list it: a control token after the others
        GgufExport.Vocab withNew = GgufExport.Vocab.of(ck, 7);
        assertEquals("<|eot|>", withNew.tokens().get(7));
        assertEquals(3, withNew.types().get(7));
    }

    @Test
    void gpt2sPreTokenizerAndStringMergesToo() throws Exception {
        Path ck = tokenizer("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", "\"a\":0,\"b\":1,\"ab\":2", "\"a b\"", "");
        GgufExport.Vocab v = GgufExport.Vocab.of(ck, -1);
        assertEquals("gpt-2", v.pre());
        assertEquals(List.of("a b"), v.merges());
    }

    @Test
    void whatLlamaCppWouldTokenizeOtherwiseIsRefused() throws Exception {
        Path meta = tokenizer("{\"type\":\"Metaspace\",\"replacement\":\"▁\"}", "\"a\":0", "", "");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GgufExport.Vocab.of(meta, -1));
        assertTrue(e.getMessage().contains("only a byte-level BPE tokenizer.json"), e.getMessage());
        Path custom = tokenizer("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\"},"
                + "{\"type\":\"ByteLevel\",\"use_regex\":false}]}", "\"a\":0", "", "");
        e = assertThrows(IllegalArgumentException.class, () -> GgufExport.Vocab.of(custom, -1));
        assertTrue(e.getMessage().contains("neither Llama 3's nor GPT-2's"), e.getMessage());
        Path gap = tokenizer(LLAMA3_PRE, "\"a\":0,\"b\":2", "", "");
        e = assertThrows(IllegalArgumentException.class, () -> GgufExport.Vocab.of(gap, -1));
        assertTrue(e.getMessage().contains("id 1 is missing"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GgufExport.Vocab.of(Files.createDirectories(dir.resolve("empty")), -1));
        assertTrue(e.getMessage().contains("has no tokenizer.model or tokenizer.json"), e.getMessage());
    }
}
