package dev.limactl.engine;

/**
 * Optimiser and regularisation settings of a {@link Trainer} (lima_train_config).
 *
 * @param residDropout residual dropout at the top layer, rising linearly from 0 at the bottom
 * @param gradClip     max global gradient norm; 0 disables clipping
 * @param offload      full fine-tuning with the fp32 master weights, gradient and AdamW moments in host memory
 *                     and the step on the host (ZeRO-Offload's split on one device; the same arithmetic)
 */
public record TrainOptions(float beta1, float beta2, float eps, float weightDecay, float gradClip, float residDropout,
                           long seed, boolean recomputeActivations, boolean offload) {
    public TrainOptions(float beta1, float beta2, float eps, float weightDecay, float gradClip, float residDropout, long seed) {
        this(beta1, beta2, eps, weightDecay, gradClip, residDropout, seed, false, false);
    }

    public TrainOptions(float beta1, float beta2, float eps, float weightDecay, float gradClip, float residDropout, long seed,
                        boolean recomputeActivations) {
        this(beta1, beta2, eps, weightDecay, gradClip, residDropout, seed, recomputeActivations, false);
    }

    /** LIMA's AdamW: betas 0.9 / 0.95, weight decay 0.1. */
    public static TrainOptions lima(float residDropout, long seed) {
        return new TrainOptions(0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, residDropout, seed);
    }
}
