package dev.limactl.chat;

import dev.limactl.data.Turn;
import dev.limactl.tokenizer.Tokenizer;
import java.util.Arrays;
import java.util.List;

/**
 * LIMA's chat format: BOS, then every utterance followed by the end-of-turn token EOT (a token of
 * its own, never EOS or padding). The loss mask covers assistant utterances and their EOT only.
 * Sequences longer than maxTokens are trimmed at the end (LIMA: 2048) and the trimmed count is reported.
 */
public final class ChatFormat {
    private final Tokenizer tokenizer;
    private final int bos, eot, maxTokens;

    public ChatFormat(Tokenizer tokenizer, int eotId, int maxTokens) {
        if (eotId == tokenizer.eosId() || eotId < 0) {
            throw new IllegalArgumentException("the EOT token must be a token of its own, got id " + eotId);
        }
        if (maxTokens < 2) throw new IllegalArgumentException("maxTokens must be >= 2, got " + maxTokens);
        this.tokenizer = tokenizer;
        this.bos = tokenizer.bosId();
        this.eot = eotId;
        this.maxTokens = maxTokens;
    }

    /** The id LIMA's EOT token gets when added to a tokenizer: the next free id. */
    public static int eotIdFor(Tokenizer t) {
        return t.vocabSize();
    }

    public int eotId() {
        return eot;
    }

    public int maxTokens() {
        return maxTokens;
    }

    /**
     * An encoded conversation.
     *
     * @param tokens  token ids (BOS first)
     * @param mask    1 where the token is a training target
     * @param trimmed tokens cut off at the end to respect maxTokens
     */
    public record Encoded(int[] tokens, byte[] mask, int trimmed) {
        public int targets() {
            int n = 0;
            for (int i = 1; i < mask.length; i++) n += mask[i];
            return n;
        }

        public int length() {
            return tokens.length;
        }
    }

    public Encoded encode(List<Turn> turns) {
        int[] buf = new int[64];
        byte[] mask = new byte[64];
        int n = 0;
        buf[n++] = bos;
        for (Turn t : turns) {
            int[] ids = tokenizer.encode(t.text());
            byte m = (byte) (t.role().equals(Turn.ASSISTANT) ? 1 : 0);
            int need = n + ids.length + 1;
            if (need > buf.length) {
                buf = Arrays.copyOf(buf, Math.max(need, buf.length * 2));
                mask = Arrays.copyOf(mask, buf.length);
            }
            System.arraycopy(ids, 0, buf, n, ids.length);
            Arrays.fill(mask, n, n + ids.length + 1, m);
            n += ids.length;
            buf[n++] = eot;
        }
        int keep = Math.min(n, maxTokens);
        return new Encoded(Arrays.copyOf(buf, keep), Arrays.copyOf(mask, keep), n - keep);
    }

    /** The prompt part of a conversation as the model sees it before answering: BOS, turns with EOT. */
    public int[] prompt(List<Turn> turns) {
        return encode(turns).tokens();
    }

    /**
     * A human-readable rendering of what the trainer sees: pieces, EOT shown as ⟨EOT⟩, target
     * tokens wrapped in [[...]].
     */
    public String show(Encoded e) {
        StringBuilder sb = new StringBuilder();
        boolean inTarget = false;
        for (int i = 0; i < e.tokens().length; i++) {
            boolean target = e.mask()[i] == 1;
            if (target && !inTarget) sb.append("[[");
            if (!target && inTarget) sb.append("]]");
            inTarget = target;
            int id = e.tokens()[i];
            sb.append(id == eot ? "⟨EOT⟩" : id == bos ? "⟨BOS⟩" : tokenizer.piece(id).replace('▁', ' '));
        }
        if (inTarget) sb.append("]]");
        return sb.toString();
    }
}
