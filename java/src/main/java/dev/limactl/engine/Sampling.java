package dev.limactl.engine;

/**
 * How tokens are drawn (lima_sampling). LIMA: temperature 0.7, top_p 0.9, repetition penalty 1.2 on
 * the tokens generated so far; temperature 0 = greedy.
 *
 * @param penaltyOnPrompt apply the repetition penalty to prompt tokens too (Hugging Face's variant)
 */
public record Sampling(float temperature, float topP, int topK, float repetitionPenalty, boolean penaltyOnPrompt) {
    public static Sampling lima() {
        return new Sampling(0.7f, 0.9f, 0, 1.2f, false);
    }

    public static Sampling greedy() {
        return new Sampling(0f, 1f, 0, 1f, false);
    }

    public Sampling {
        if (!Float.isFinite(temperature) || temperature < 0) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top_p must be in (0, 1], got " + topP);
        if (topK < 0) throw new IllegalArgumentException("top_k must be >= 0, got " + topK);
        if (!(repetitionPenalty > 0) || !Float.isFinite(repetitionPenalty)) {
            throw new IllegalArgumentException("repetition_penalty must be > 0, got " + repetitionPenalty);
        }
    }
}
