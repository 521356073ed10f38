package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;
import java.nio.file.Path;

/** AdamW training of a {@link Model}: gradient buffers, fp32 moments and the step counter live in liblima. */
public final class Trainer implements AutoCloseable {
    public record ForwardBackward(double lossSum, long numTargets) {}

    /** commSeconds: time the step spent in collectives (data parallel; 0 for one process). */
    public record Step(double gradNorm, boolean clipped, long step, double commSeconds) {}

    private LimaNative.lima_trainer handle;
    private final LimaNative.lima_fb_result fb = new LimaNative.lima_fb_result();
    private final LimaNative.lima_step_result st = new LimaNative.lima_step_result();

    private Trainer(LimaNative.lima_trainer handle) {
        this.handle = handle;
    }

    /** Attaches a trainer to the model; the model must outlive it. */
    public static Trainer create(Model model, TrainOptions o) {
        LimaNative.lima_train_config c = new LimaNative.lima_train_config();
        try {
            LimaNative.lima_train_config_init(c);
            c.beta1(o.beta1()).beta2(o.beta2()).eps(o.eps()).weight_decay(o.weightDecay()).grad_clip(o.gradClip())
                    .resid_dropout(o.residDropout()).seed(o.seed()).recompute_activations(o.recomputeActivations() ? 1 : 0)
                    .offload(o.offload() ? 1 : 0);
            LimaNative.lima_trainer h = new LimaNative.lima_trainer();
            Native.check(LimaNative.lima_trainer_create(model.live(), c, h));
            return new Trainer(h);
        } finally {
            LimaNative.release(c);
        }
    }

    /**
     * Device memory of the model and this trainer for micro-batches of rows x seqLen tokens, in bytes; host: the pinned
     * host memory of an offloaded trainer (master weights, gradient, moments), 0 otherwise.
     */
    public record MemoryPlan(long weights, long optimizer, long activations, long workspace, long total, long deviceFree,
                             long deviceTotal, long peak, long host) {
        public String describe() {
            return String.format(java.util.Locale.ROOT,
                    "weights %.2f GiB + optimizer %.2f GiB + activations %.2f GiB + workspace %.2f GiB = %.2f GiB "
                            + "(device: %.1f GiB free of %.1f GiB; peak so far %.2f GiB)%s",
                    g(weights), g(optimizer), g(activations), g(workspace), g(total), g(deviceFree), g(deviceTotal), g(peak),
                    host > 0 ? String.format(java.util.Locale.ROOT, "; offloaded to pinned host memory %.2f GiB", g(host)) : "");
        }

        private static double g(long b) {
            return b / 1073741824.0;
        }
    }

    /**
     * Plans and reserves device memory for micro-batches of rows x seqLen tokens. On CUDA a plan that cannot fit
     * throws (LIMA_ERR_OUT_OF_MEMORY) with the figures, before any training step.
     */
    /**
     * Makes this (CPU) trainer data parallel over the ranks of {@code comm} at ZeRO stage 0-3 (see
     * lima_trainer_set_comm): every rank starts from rank 0's weights, gradients are summed over the
     * ranks at each step, and with stage >= 1 each rank keeps its shard of the optimiser state. At
     * stage 3 the weights too: every rank then runs the same number of forward/backward calls per
     * step ({@link #skipMicroBatch} where it has none), evaluating the model is collective, and the
     * model's other uses wait for {@link #gatherParams}.
     */
    public void setCommunicator(Communicator comm, int zeroStage) {
        Native.check(LimaNative.lima_trainer_set_comm(live(), comm.live(), zeroStage));
    }

    /**
     * Loads the optimiser state every rank of an earlier job saved (one shard file per rank, any
     * number of ranks), keeping what this trainer holds: a job can resume with another number of ranks.
     */
    public void loadStateShards(java.util.List<java.nio.file.Path> files) {
        LimaNative.trainerLoadStateShards(live(), files.stream().map(java.nio.file.Path::toString).toList(), Native::check);
    }

    /** ZeRO-3: this rank has no micro-batch in this round but takes part in the others' collectives (no-op below stage 3). */
    public void skipMicroBatch() {
        Native.check(LimaNative.lima_trainer_skip_micro_batch(live()));
    }

    /**
     * ZeRO-3, called by every rank together: rank {@code root} (every rank for -1) then holds the whole
     * weights in its model, to save or read them, until the next training call shards them again.
     * No-op below stage 3.
     */
    public void gatherParams(int root) {
        Native.check(LimaNative.lima_trainer_gather_params(live(), root));
    }

    /**
     * The model as a Hugging Face checkpoint written by rank {@code root} (maxShardBytes 0 = one file).
     * At ZeRO-3 every rank calls it together and the weights are gathered one unit at a time as they
     * are written, so no rank holds the whole model; below, root saves its own weights.
     */
    public void saveModel(java.nio.file.Path dir, Dtype dtype, long maxShardBytes, int root) {
        Native.check(LimaNative.lima_trainer_save_model(live(), dir.toString(), dtype.code, maxShardBytes, root));
    }

    /** The index, within the whole optimiser step, of the next micro-batch this rank runs (its dropout key). */
    public void setMicroBatch(int index) {
        Native.check(LimaNative.lima_trainer_set_micro_batch(live(), index));
    }

    public MemoryPlan planMemory(int rows, int seqLen) {
        LimaNative.lima_memory_plan p = new LimaNative.lima_memory_plan();
        try {
            Native.check(LimaNative.lima_trainer_plan_memory(live(), rows, seqLen, p));
            return new MemoryPlan(p.weights(), p.optimizer(), p.activations(), p.workspace(), p.total(), p.device_free(),
                    p.device_total(), p.peak(), p.host());
        } finally {
            p.close();
        }
    }

    /**
     * Forward + backward of one micro-batch; gradients accumulate, scaled by 1 / stepTargets (the
     * targets of every micro-batch of this optimiser step).
     */
    public ForwardBackward forwardBackward(Batch b, long stepTargets) {
        Native.check(LimaNative.lima_trainer_forward_backward(live(), b.live(), stepTargets, fb));
        return new ForwardBackward(fb.loss_sum(), fb.num_targets());
    }

    /** Clips, applies one AdamW update with learning rate lr, zeroes the gradients. */
    public Step step(float lr) {
        Native.check(LimaNative.lima_trainer_step(live(), lr, st));
        return new Step(st.grad_norm(), st.clipped() != 0, st.step(), st.comm_seconds());
    }

    public void zeroGrad() {
        Native.check(LimaNative.lima_trainer_zero_grad(live()));
    }

    public long stepCount() {
        long[] out = new long[1];
        Native.check(LimaNative.lima_trainer_get_step(live(), out));
        return out[0];
    }

    public float[] readGrad(String name, int numel) {
        float[] out = new float[numel];
        Native.check(LimaNative.lima_trainer_read_grad(live(), name, out, numel));
        return out;
    }

    /** Optimiser state (moments, step) to one safetensors file, written atomically. */
    public void saveState(Path path) {
        Native.check(LimaNative.lima_trainer_save_state(live(), path.toString()));
    }

    public void loadState(Path path) {
        Native.check(LimaNative.lima_trainer_load_state(live(), path.toString()));
    }

    private LimaNative.lima_trainer live() {
        if (handle == null) throw new IllegalStateException("trainer is closed");
        return handle;
    }

    @Override
    public void close() {
        if (handle != null) {
            LimaNative.lima_trainer_free(handle);
            handle = null;
            LimaNative.release(fb);
            LimaNative.release(st);
        }
    }
}
