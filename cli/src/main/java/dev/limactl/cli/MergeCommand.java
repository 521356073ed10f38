package dev.limactl.cli;

import dev.limactl.checkpoint.AdapterCheckpoint;
import dev.limactl.checkpoint.Checkpoint;
import dev.limactl.engine.Dtype;
import dev.limactl.engine.Model;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Comparator;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "merge", mixinStandardHelpOptions = true,
        description = {"Folds a LoRA adapter into its base model (W += alpha/r * B A) and writes a full Hugging Face checkpoint",
                "with the tokenizer and limactl.json (the EOT id), as limactl train writes for full fine-tuning."})
public final class MergeCommand implements Callable<Integer> {
    @Option(names = "--adapter", required = true, description = "The adapter directory (PEFT format, e.g. a checkpoint of a LoRA run).")
    Path adapter;

    @Option(names = {"-m", "--model"}, description = "The base model (default: the one the adapter names).")
    Path model;

    @Option(names = {"-o", "--out"}, required = true, description = "The merged checkpoint's directory (must not exist or be empty).")
    Path out;

    @Option(names = "--dtype", defaultValue = "bf16", description = "bf16 or f32 (default ${DEFAULT-VALUE}).")
    String dtype;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter err = spec.commandLine().getErr();
        Dtype dt = switch (dtype) {
            case "bf16" -> Dtype.BF16;
            case "f32" -> Dtype.F32;
            default -> throw new IllegalArgumentException("--dtype must be bf16 or f32, got \"" + dtype + "\"");
        };
        if (!Files.isRegularFile(adapter.resolve(AdapterCheckpoint.CONFIG))) {
            throw new IllegalArgumentException("--adapter " + adapter + " has no " + AdapterCheckpoint.CONFIG + " (not a LoRA adapter)");
        }
        if (Files.exists(out) && (!Files.isDirectory(out) || nonEmpty(out))) {
            throw new IllegalArgumentException("--out " + out + " exists and is not an empty directory: nothing was written");
        }
        Path base = model != null ? model : AdapterCheckpoint.baseOf(adapter);
        Path tmp = out.resolveSibling(out.getFileName() + ".tmp-" + ProcessHandle.current().pid());
        try (Model m = AdapterCheckpoint.open(base, adapter, "cpu")) {
            m.mergeAdapter();
            m.save(tmp, dt);
            for (Path dir : new Path[] {adapter, base}) {  // the tokenizer files: the adapter's, else the base's
                if (dev.limactl.tokenizer.Tokenizer.FILES.stream().noneMatch(f -> Files.isRegularFile(dir.resolve(f)))) continue;
                for (String f : dev.limactl.tokenizer.Tokenizer.FILES) {
                    if (Files.isRegularFile(dir.resolve(f))) Files.copy(dir.resolve(f), tmp.resolve(f), StandardCopyOption.REPLACE_EXISTING);
                }
                break;
            }
            var rec = Checkpoint.read(adapter).or(() -> Checkpoint.read(base));
            if (rec.isPresent()) {
                rec.get().write(tmp);
                try (dev.limactl.tokenizer.Tokenizer tok = dev.limactl.tokenizer.Tokenizer.open(tmp)) {
                    dev.limactl.tokenizer.HfTokenizerFiles.write(tmp, tok, rec.get().eotTokenId(), m.config().maxPositionEmbeddings(),
                            w -> err.println("warning: " + w));
                }
            }
            if (Files.exists(out)) Files.delete(out);
            Files.move(tmp, out, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            deleteTree(tmp);
        }
        err.println("merged " + adapter + " into " + base + ": " + out);
        return ExitCodes.OK;
    }

    private static boolean nonEmpty(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.findAny().isPresent();
        }
    }

    private static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(q);
        }
    }
}
