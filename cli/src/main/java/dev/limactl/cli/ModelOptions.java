package dev.limactl.cli;

import dev.limactl.generate.ModelDir;
import java.nio.file.Path;
import picocli.CommandLine.Option;

/** The model flags shared by generate, chat, serve and perplexity. */
final class ModelOptions {
    @Option(names = {"-m", "--model"}, required = true, description = "LIMA-format checkpoint directory, or a LoRA adapter"
            + " checkpoint (its base model is the one it names).")
    Path model;

    @Option(names = "--adapter", description = "A LoRA adapter (PEFT format) served over --model, unmerged.")
    Path adapter;

    @Option(names = "--device", defaultValue = "cpu", description = "cpu, cuda or cuda:N: where the model runs (default ${DEFAULT-VALUE}).")
    String device;

    @Option(names = "--context", defaultValue = "4096", description = "Context length cap (default ${DEFAULT-VALUE}).")
    int context;

    @Option(names = "--tokenizer", description = "Tokenizer (default: the model directory's).")
    Path tokenizer;

    /** Opens the checkpoint with its tokenizer and EOT token on the chosen device. */
    ModelDir open() {
        return adapter != null ? new ModelDir(model, adapter, tokenizer, context, device) : new ModelDir(model, tokenizer, context, device);
    }
}
