package dev.limactl.engine;

/**
 * Optimiser and regularisation settings of a {@link Trainer} (lima_train_config).
 *
 * @param residDropout residual dropout at the top layer, rising linearly from 0 at the bottom
 * @param gradClip     max global gradient norm; 0 disables clipping
 */
public record TrainOptions(float beta1, float beta2, float eps, float weightDecay, float gradClip, float residDropout,
                           long seed, boolean recomputeActivations) {
    public TrainOptions(float beta1, float beta2, float eps, float weightDecay, float gradClip, float residDropout, long seed) {
        this(beta1, beta2, eps, weightDecay, gradClip, residDropout, seed, false);
    }

    /** LIMA's AdamW: betas 0.9 / 0.95, weight decay 0.1. */
    public static TrainOptions lima(float residDropout, long seed) {
        return new TrainOptions(0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, residDropout, seed);
    }
}
