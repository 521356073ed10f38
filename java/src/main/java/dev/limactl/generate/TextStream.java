package dev.limactl.generate;

import dev.limactl.tokenizer.Tokenizer;
import java.util.Arrays;

/**
 * Turns generated token ids into text incrementally, in time independent of the answer's length:
 * each new token decodes only a short window (the tokens since the last stable point plus the
 * ones before it), as vLLM's and Hugging Face's streaming detokenizers do. Decoding a window
 * instead of the whole answer is exact because the window starts at a token boundary whose text
 * was already stable, and the window's own leading-space handling is cancelled by decoding its
 * prefix alone and taking the difference. Text ending in U+FFFD (a character split over
 * byte-fallback tokens) is held back until its last byte arrives.
 */
final class TextStream {
    private final Tokenizer tokenizer;
    private int[] ids = new int[64];
    private int size, prefix, read;
    private final int context;
    private final StringBuilder text = new StringBuilder();

    TextStream(Tokenizer tokenizer) {
        this(tokenizer, new int[0]);
    }

    /**
     * A stream that continues the given tokens (a raw prompt's last one): its text is what the new
     * tokens add after them, so a word boundary at the start keeps its space.
     */
    TextStream(Tokenizer tokenizer, int[] context) {
        this.tokenizer = tokenizer;
        this.context = context.length;
        if (context.length > ids.length) ids = new int[context.length * 2];
        System.arraycopy(context, 0, ids, 0, context.length);
        size = read = context.length;
    }

    /** Adds a token and returns the text that became stable with it ("" if none). */
    String add(int id) {
        if (size == ids.length) ids = Arrays.copyOf(ids, size * 2);
        ids[size++] = id;
        String before = decode(prefix, read), now = decode(prefix, size);
        if (now.length() <= before.length() || now.endsWith("\uFFFD") || !now.startsWith(before)) return "";
        String delta = now.substring(before.length());
        text.append(delta);
        prefix = read;
        read = size;
        return delta;
    }

    /** Length of the stable text so far. */
    int stableLength() {
        return text.length();
    }

    /** Where s first occurs in the stable text at or after `from`, or -1. */
    int indexOf(String s, int from) {
        return text.indexOf(s, from);
    }

    /** The whole text, including a tail not yet stable (an unfinished byte sequence, as it is). */
    String finish() {
        String before = decode(prefix, read), now = decode(prefix, size);
        return now.startsWith(before) ? text + now.substring(before.length()) : text.toString();
    }

    int tokens() {
        return size - context;
    }

    private String decode(int from, int to) {
        return from == to ? "" : tokenizer.decode(Arrays.copyOfRange(ids, from, to));
    }

    /** The token ids added so far. */
    public int[] ids() {
        return java.util.Arrays.copyOfRange(ids, context, size);
    }
}
