package dev.limactl.cli;

import dev.limactl.checkpoint.GgufExport;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "export", mixinStandardHelpOptions = true,
        description = {"Write a checkpoint in another format: --format gguf, one file for llama.cpp and Ollama (weights in f16, bf16",
                "or q8_0; the SentencePiece vocabulary, LIMA's EOT and the chat template in its metadata)."})
public final class ExportCommand implements Callable<Integer> {
    @Option(names = {"-m", "--model"}, required = true, description = "The checkpoint directory (e.g. RUN/checkpoints/epoch-07, or a merged adapter).")
    Path model;

    @Option(names = "--format", defaultValue = "gguf", description = "gguf (default ${DEFAULT-VALUE}).") String format;

    @Option(names = "--type", defaultValue = "f16", description = "Weights: f16, bf16 or q8_0 (default ${DEFAULT-VALUE}).") String type;

    @Option(names = {"-o", "--out"}, required = true, description = "The file to write (e.g. model.gguf).") Path out;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        if (!format.equals("gguf")) throw new IllegalArgumentException("--format must be gguf, got \"" + format + "\"");
        GgufExport.Type t = switch (type.toLowerCase(Locale.ROOT)) {
            case "f16" -> GgufExport.Type.F16;
            case "bf16" -> GgufExport.Type.BF16;
            case "q8_0" -> GgufExport.Type.Q8_0;
            default -> throw new IllegalArgumentException("--type must be f16, bf16 or q8_0, got \"" + type + "\"");
        };
        if (!Files.isDirectory(model)) throw new IllegalArgumentException("--model " + model + " is not a checkpoint directory");
        if (Files.isDirectory(out)) throw new IllegalArgumentException("--out " + out + " is a directory: name the .gguf file to write");
        PrintWriter err = spec.commandLine().getErr();
        boolean quiet = LimactlCommand.quiet(spec.commandLine());
        GgufExport.write(model, out, t, line -> {
            if (!quiet) err.println("export: " + line);
        });
        spec.commandLine().getOut().printf("wrote %s (%s, %s)%n", out, format, type.toLowerCase(Locale.ROOT));
        return ExitCodes.OK;
    }
}
