package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;

/**
 * A micro-batch of rows x seqLen tokens. A row may pack several examples: segment ids name the
 * example of each token (0 = padding); attention never crosses examples and positions restart at
 * each. lossMask[t] = 1 marks token t as a target (a response token).
 */
public final class Batch implements AutoCloseable {
    private final int rows, seqLen;
    private LimaNative.lima_batch handle = new LimaNative.lima_batch();
    private long targets;

    public Batch(int rows, int seqLen) {
        Native.check(LimaNative.lima_batch_create(rows, seqLen, handle));
        this.rows = rows;
        this.seqLen = seqLen;
    }

    /** Sets the contents (arrays of rows * seqLen); segmentIds null = one example per row, no padding. */
    public Batch set(int[] tokens, byte[] lossMask, int[] segmentIds) {
        int n = rows * seqLen;
        if (tokens.length != n || (lossMask != null && lossMask.length != n) || (segmentIds != null && segmentIds.length != n)) {
            throw new IllegalArgumentException("batch of " + rows + " x " + seqLen + " needs arrays of " + n
                    + " elements, got tokens " + tokens.length + ", mask " + (lossMask == null ? "null" : lossMask.length)
                    + ", segments " + (segmentIds == null ? "null" : segmentIds.length));
        }
        Native.check(LimaNative.lima_batch_set(live(), tokens, lossMask, segmentIds));
        long[] out = new long[1];
        Native.check(LimaNative.lima_batch_num_targets(handle, out));
        targets = out[0];
        return this;
    }

    public int rows() {
        return rows;
    }

    public int seqLen() {
        return seqLen;
    }

    /** Tokens that carry loss in this micro-batch. */
    public long numTargets() {
        return targets;
    }

    LimaNative.lima_batch live() {
        if (handle == null) throw new IllegalStateException("batch is closed");
        return handle;
    }

    @Override
    public void close() {
        if (handle != null) {
            LimaNative.lima_batch_free(handle);
            handle = null;
        }
    }
}
