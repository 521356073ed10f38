package dev.limactl.generate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.limactl.tokenizer.Tokenizer;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class TextStreamTest {
    /** Counts the ids each decode call is given, to check that streaming does not re-decode the answer. */
    static final class Counting implements Tokenizer {
        final Tokenizer t;
        long decoded;

        Counting(Tokenizer t) {
            this.t = t;
        }

        public int[] encode(String text) { return t.encode(text); }
        public String decode(int[] ids) { decoded += ids.length; return t.decode(ids); }
        public List<String> pieces(String text) { return t.pieces(text); }
        public String piece(int id) { return t.piece(id); }
        public int vocabSize() { return t.vocabSize(); }
        public int bosId() { return t.bosId(); }
        public int eosId() { return t.eosId(); }
        public void close() { t.close(); }
    }

    @ParameterizedTest
    @ValueSource(strings = {"../../shared/data/tokenizers/llama/tokenizer.model", "src/test/resources/tokenizer/small_tokenizer.json"})
    void piecesConcatenateToTheFullDecodeInWorkLinearInLength(String path) {
        try (Counting tok = new Counting(Tokenizer.open(Path.of(path)))) {
            // real text (spaces, digits, code, multi-byte characters that need byte fallback), then random ids
            String text = "  Hello wörld! 2048 tokens; def f(x):\n    return x**2  # 你好 🙂 — “quotes” naïve café\t";
            int[] base = tok.encode(text.repeat(20));
            Random r = new Random(3);
            int[] ids = new int[base.length + 400];
            System.arraycopy(base, 0, ids, 0, base.length);
            for (int i = base.length; i < ids.length; i++) ids[i] = 3 + r.nextInt(tok.vocabSize() - 3);
            TextStream s = new TextStream(tok);
            StringBuilder streamed = new StringBuilder();
            for (int id : ids) {
                String piece = s.add(id);
                assertFalse(piece.endsWith("\uFFFD"), "a piece never ends inside a split character");
                streamed.append(piece);
            }
            String all = s.finish();
            tok.decoded = 0;
            assertEquals(tok.decode(ids), all);
            assertTrue(all.startsWith(streamed.toString()));
            assertEquals(ids.length, s.tokens());
            // each add decodes a short window, not the answer so far: bounded total work
            tok.decoded = 0;
            TextStream again = new TextStream(tok);
            for (int id : ids) again.add(id);
            assertTrue(tok.decoded < 40L * ids.length, tok.decoded + " ids decoded for " + ids.length + " tokens");
        }
    }

    /** A stream continuing a prompt's last token gives the text the new tokens add after it: a word boundary keeps its space. */
    @org.junit.jupiter.api.Test
    void aContinuationKeepsTheSpaceOfAWordBoundary() {
        try (Tokenizer tok = Tokenizer.open(Path.of("../../shared/data/tokenizers/llama/tokenizer.model"))) {
            int[] prompt = tok.encode("How should I");
            int[] more = tok.encode("How should I store coffee? In a jar.");
            int[] gen = java.util.Arrays.copyOfRange(more, prompt.length, more.length);
            TextStream plain = new TextStream(tok), cont = new TextStream(tok, new int[] {prompt[prompt.length - 1]});
            StringBuilder streamed = new StringBuilder();
            for (int id : gen) {
                plain.add(id);
                streamed.append(cont.add(id));
            }
            assertEquals(" store coffee? In a jar.", cont.finish());
            assertEquals(cont.finish(), streamed.toString());
            assertEquals("store coffee? In a jar.", plain.finish(), "an answer (no context) starts without the space");
            assertEquals(gen.length, cont.tokens());
            assertEquals(java.util.Arrays.toString(gen), java.util.Arrays.toString(cont.ids()));
        }
    }
}
