package dev.limactl.cli;

import dev.limactl.data.curate.Curator;
import dev.limactl.data.curate.Recipe;
import dev.limactl.tokenizer.Tokenizer;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "curate", mixinStandardHelpOptions = true,
        description = {"Build LIMA-style train/dev/test sets from raw sources with a recipe.",
                "Writes {split}.arrow, manifest.json (Table 1 statistics) and rejected.jsonl (rule per rejected candidate)."})
public final class CurateCommand implements Callable<Integer> {
    static final class Which {
        @Option(names = "--recipe", description = "Recipe YAML (paths relative to the file).") Path recipe;

        @Option(names = "--preset", description = "A shipped recipe: lima, shared-sample, demo (paths relative to --root).") String preset;
    }

    @ArgGroup(multiplicity = "1") Which which;

    @Option(names = "--root", defaultValue = ".", description = "Data root for a --preset's paths (default: ${DEFAULT-VALUE}).")
    Path root;

    @Option(names = "--out", required = true, description = "Output directory.")
    Path out;

    @Option(names = "--tokenizer", description = "Tokenizer for token lengths in the manifest (tokenizer.model/.json).")
    Path tokenizer;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter err = spec.commandLine().getErr(), o = spec.commandLine().getOut();
        boolean quiet = LimactlCommand.quiet(spec.commandLine());
        Recipe recipe = which.recipe != null ? Recipe.load(which.recipe) : Recipe.parse(Recipe.preset(which.preset), "preset " + which.preset);
        Path base = which.recipe != null ? which.recipe.toAbsolutePath().getParent() : root;
        long t0 = System.nanoTime();
        Curator.Result r = new Curator(recipe, base, m -> { if (!quiet) err.println(m); }).run();
        if (tokenizer != null) {
            try (Tokenizer tok = Tokenizer.open(tokenizer)) {
                Curator.write(r, out, s -> tok.encode(s).length, recipe);
            }
        } else {
            Curator.write(r, out, null, recipe);
        }
        r.notes().forEach(n -> err.println("note: " + n));
        for (var e : r.splits().entrySet()) o.printf("%-5s %5d examples -> %s%n", e.getKey(), e.getValue().size(), out.resolve(e.getKey() + ".arrow"));
        o.printf("rejected %d candidates (see %s); manifest %s; %.1f s%n", r.rejected().size(), out.resolve("rejected.jsonl"),
                out.resolve("manifest.json"), (System.nanoTime() - t0) / 1e9);
        return ExitCodes.OK;
    }

    static List<String> presets() {
        return List.of("lima", "shared-sample", "demo");
    }
}
