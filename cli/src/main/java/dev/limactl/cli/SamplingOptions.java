package dev.limactl.cli;

import dev.limactl.engine.Sampling;
import picocli.CommandLine.Option;

/** Sampling flags shared by generate and chat; the defaults are LIMA's. */
final class SamplingOptions {
    @Option(names = "--temperature", defaultValue = "0.7", description = "0 = greedy (default ${DEFAULT-VALUE}).")
    float temperature;

    @Option(names = "--top-p", defaultValue = "0.9", description = "Nucleus sampling mass (default ${DEFAULT-VALUE}).")
    float topP;

    @Option(names = "--top-k", defaultValue = "0", description = "0 = off (default ${DEFAULT-VALUE}).")
    int topK;

    @Option(names = "--repetition-penalty", defaultValue = "1.2", description = "On generated tokens (default ${DEFAULT-VALUE}).")
    float repetitionPenalty;

    @Option(names = "--penalize-prompt", description = "Apply the repetition penalty to prompt tokens too (Hugging Face's variant).")
    boolean penalizePrompt;

    @Option(names = "--max-new-tokens", defaultValue = "2048", description = "Default ${DEFAULT-VALUE} (LIMA).")
    int maxNewTokens;

    @Option(names = "--seed", defaultValue = "0", description = "Seed of the draws (default ${DEFAULT-VALUE}).")
    long seed;

    Sampling sampling() {
        return new Sampling(temperature, topP, topK, repetitionPenalty, penalizePrompt);
    }
}
