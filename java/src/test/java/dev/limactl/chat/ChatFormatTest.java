package dev.limactl.chat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.limactl.data.Turn;
import dev.limactl.tokenizer.Tokenizer;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class ChatFormatTest {
    static Tokenizer tok;

    @BeforeAll
    static void open() {
        tok = Tokenizer.open(Path.of("../../shared/data/tokenizers/llama/tokenizer.model"));
    }

    @AfterAll
    static void close() {
        tok.close();
    }

    static int[] concat(int[]... parts) {
        return java.util.Arrays.stream(parts).flatMapToInt(IntStream::of).toArray();
    }

    @Test
    void bosThenEveryUtteranceFollowedByEotWithTheMaskOnAssistantTurns() {
        int eot = ChatFormat.eotIdFor(tok);
        assertEquals(32000, eot);  // a new id, not EOS (2) and not a reused piece
        ChatFormat f = new ChatFormat(tok, eot, 2048);
        List<Turn> conv = List.of(new Turn(Turn.USER, "Hi"), new Turn(Turn.ASSISTANT, "Hello there"),
                new Turn(Turn.USER, "Bye"), new Turn(Turn.ASSISTANT, "Ciao"));
        ChatFormat.Encoded e = f.encode(conv);
        int[] u1 = tok.encode("Hi"), a1 = tok.encode("Hello there"), u2 = tok.encode("Bye"), a2 = tok.encode("Ciao");
        assertArrayEquals(concat(new int[] {1}, u1, new int[] {eot}, a1, new int[] {eot}, u2, new int[] {eot}, a2,
                new int[] {eot}), e.tokens());
        byte[] want = new byte[e.length()];
        int p = 1 + u1.length + 1;
        for (int i = 0; i <= a1.length; i++) want[p + i] = 1;
        p += a1.length + 1 + u2.length + 1;
        for (int i = 0; i <= a2.length; i++) want[p + i] = 1;
        assertArrayEquals(want, e.mask());
        assertEquals(a1.length + 1 + a2.length + 1, e.targets());
        assertEquals(0, e.trimmed());
        String shown = f.show(e);
        assertTrue(shown.startsWith("⟨BOS⟩ Hi⟨EOT⟩[[ Hello there⟨EOT⟩]]"), shown);
    }

    @Test
    void longTextsAreTrimmedAndTheCountReported() {
        ChatFormat f = new ChatFormat(tok, 32000, 16);
        ChatFormat.Encoded e = f.encode(List.of(new Turn(Turn.USER, "word ".repeat(10)), new Turn(Turn.ASSISTANT, "answer ".repeat(10))));
        assertEquals(16, e.length());
        int full = 1 + tok.encode("word ".repeat(10)).length + 1 + tok.encode("answer ".repeat(10)).length + 1;
        assertEquals(full - 16, e.trimmed());
        ChatFormat.Encoded empty = new ChatFormat(tok, 32000, 8).encode(
                List.of(new Turn(Turn.USER, "word ".repeat(10)), new Turn(Turn.ASSISTANT, "lost")));
        assertEquals(0, empty.targets());  // the caller warns about such examples
    }

    @Test
    void eotMayNotBeEos() {
        assertThrows(IllegalArgumentException.class, () -> new ChatFormat(tok, 2, 2048));
    }
}
