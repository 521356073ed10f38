package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;

/**
 * A KV-cache decoder over a {@link Model} (lima_generator): start rows of prompt tokens, then step;
 * sampling happens in the backend and only token ids come back.
 */
public final class Generator implements AutoCloseable {
    private LimaNative.lima_generator handle = new LimaNative.lima_generator();
    private final LimaNative.lima_sampling native_ = new LimaNative.lima_sampling();
    private final int maxRows, maxLen, vocab;
    private int rows;

    public Generator(Model model, int maxRows, int maxLen) {
        Native.check(LimaNative.lima_generator_create(model.live(), maxRows, maxLen, handle));
        this.maxRows = maxRows;
        this.maxLen = maxLen;
        this.vocab = model.config().vocabSize();
    }

    public int maxRows() {
        return maxRows;
    }

    public int maxLen() {
        return maxLen;
    }

    /** Prefills one row per prompt; seeds[r] keys row r's draws (reproducible whatever the batch). */
    public void start(int[][] prompts, long[] seeds) {
        int total = 0;
        int[] lens = new int[prompts.length];
        for (int r = 0; r < prompts.length; r++) {
            lens[r] = prompts[r].length;
            total += lens[r];
        }
        int[] flat = new int[total];
        int at = 0;
        for (int[] p : prompts) {
            System.arraycopy(p, 0, flat, at, p.length);
            at += p.length;
        }
        Native.check(LimaNative.lima_generator_start(live(), prompts.length, flat, lens, seeds));
        rows = prompts.length;
    }

    /** One token for every active row (null = all); -1 for inactive rows. */
    public int[] step(Sampling s, boolean[] active) {
        native_.temperature(s.temperature()).top_p(s.topP()).top_k(s.topK()).repetition_penalty(s.repetitionPenalty())
                .penalty_scope(s.penaltyOnPrompt() ? 1 : 0);
        byte[] act = null;
        if (active != null) {
            act = new byte[rows];
            for (int r = 0; r < rows; r++) act[r] = (byte) (active[r] ? 1 : 0);
        }
        int[] out = new int[rows];
        Native.check(LimaNative.lima_generator_step(live(), native_, act, out));
        return out;
    }

    /** Current next-token logits, (rows, vocab). */
    public float[] logits() {
        float[] out = new float[rows * vocab];
        Native.check(LimaNative.lima_generator_logits(live(), out, out.length));
        return out;
    }

    private LimaNative.lima_generator live() {
        if (handle == null) throw new IllegalStateException("decoder is closed");
        return handle;
    }

    @Override
    public void close() {
        if (handle != null) {
            LimaNative.lima_generator_free(handle);
            handle = null;
            LimaNative.release(native_);
        }
    }
}
