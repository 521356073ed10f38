package dev.limactl.eval;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.limactl.config.ConfigLoader;
import dev.limactl.data.ExampleFiles;
import dev.limactl.data.curate.Curator;
import dev.limactl.data.curate.Recipe;
import dev.limactl.engine.Sampling;
import dev.limactl.generate.AnswerFile;
import dev.limactl.generate.ModelDir;
import dev.limactl.train.TrainListener;
import dev.limactl.train.TrainRun;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * The paper's Section 5 ablations end to end, from a grid file: for every variant, curate its data
 * with its recipe, train with one shared configuration, answer the test prompts K times, and score
 * the answers with the Likert judge; then one table and one chart of mean +- 95% CI per variant. Every
 * stage is cached in OUT/VARIANT/ and resumes: curated data and finished runs are reused, an interrupted
 * run resumes from its state, answer files continue, judge answers come from the cache.
 */
public final class Experiment {
    /** A grid file (YAML). Paths are relative to the grid file. */
    public record Grid(@JsonProperty("train_preset") String trainPreset, @JsonProperty("train_set") List<String> trainSet, String test,
                       int samples, @JsonProperty("max_new_tokens") int maxNewTokens, List<Variant> variants) {}

    /** root: the data root of the recipe's relative paths (default: the recipe's folder). */
    public record Variant(String name, String recipe, String root) {}

    private Experiment() {}

    public static Grid load(Path file) {
        ObjectMapper yaml = new ObjectMapper(new YAMLFactory()).enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
        Grid g;
        try {
            g = yaml.readValue(dev.limactl.data.Utf8Text.read(file), Grid.class);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("grid file " + file + " does not exist");
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(file + ": " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        if (g.variants() == null || g.variants().isEmpty()) throw new IllegalArgumentException(file + ": no variants");
        if (g.test() == null) throw new IllegalArgumentException(file + ": \"test\" (the prompts to answer) is required");
        if (g.samples() < 1 || g.maxNewTokens() < 1) throw new IllegalArgumentException(file + ": samples and max_new_tokens must be >= 1");
        for (Variant v : g.variants()) {
            if (v.name() == null || !v.name().matches("[A-Za-z0-9._-]+")) throw new IllegalArgumentException(file + ": variant name \"" + v.name() + "\" must be a plain word");
            if (v.recipe() == null) throw new IllegalArgumentException(file + ": variant " + v.name() + " has no recipe");
        }
        return g;
    }

    /** The variant's training as progress lines: about 20 step lines (step, loss, tokens/s) and one per epoch. */
    static TrainListener stepProgress(String variant, Consumer<String> progress) {
        return new TrainListener() {
            long total = 1;

            @Override
            public void onStart(TrainRun.Plan plan) {
                total = Math.max(1, plan.totalSteps());
            }

            @Override
            public void onStep(TrainRun.StepMetrics m) {
                long every = Math.max(1, total / 20);
                if (m.step() % every == 0 || m.step() == total) {
                    progress.accept(String.format(java.util.Locale.ROOT, "%s: training step %d/%d (%.0f%%), epoch %d, loss %.4f, %.0f tokens/s",
                            variant, m.step(), total, 100.0 * m.step() / total, m.epoch(), m.loss(), m.tokensPerSec()));
                }
            }

            @Override
            public void onEpoch(int epoch, Path checkpoint, double devPerplexity) {
                progress.accept(variant + ": epoch " + epoch + " done" + (checkpoint == null ? "" : ", checkpoint " + checkpoint));
            }
        };
    }

    public static List<Evaluation.Likert> run(Path gridFile, Path out, Judge judge, Consumer<String> progress) {
        Grid g = load(gridFile);
        Path base = gridFile.toAbsolutePath().getParent();
        List<Evaluation.Likert> results = new ArrayList<>();
        var test = ExampleFiles.read(base.resolve(g.test()), "test");
        for (Variant v : g.variants()) {
            Path dir = out.resolve(v.name()), data = dir.resolve("data"), run = dir.resolve("run");
            // 1. curate
            if (!Files.exists(data.resolve("manifest.json"))) {
                Path recipePath = base.resolve(v.recipe());
                Recipe r = Recipe.load(recipePath);
                Path root = v.root() != null ? base.resolve(v.root()) : recipePath.getParent();
                Curator.write(new Curator(r, root, m -> progress.accept(v.name() + ": " + m)).run(), data, null, r);
            }
            if (!Files.exists(data.resolve("train.arrow"))) throw new IllegalArgumentException("variant " + v.name() + ": its recipe produced no train split");
            // 2. train (resume an interrupted run; reuse a finished one)
            Path last = lastCheckpoint(run);
            boolean finished = last != null && Files.exists(run.resolve("state/trainer.json"))
                    && !Files.exists(run.resolve("state.tmp")) && isFinished(run);
            if (!finished) {
                TrainRun tr;
                if (Files.exists(run.resolve("state/trainer.json"))) {
                    tr = TrainRun.resume(run);
                } else {
                    List<String> sets = new ArrayList<>(g.trainSet() == null ? List.of() : g.trainSet());
                    sets.add("data.train=" + data.resolve("train.arrow"));
                    sets.add("data.dev=");
                    tr = TrainRun.create(ConfigLoader.preset(g.trainPreset()).set(sets), run);
                }
                progress.accept(v.name() + ": training");
                TrainRun.Result res = tr.run(stepProgress(v.name(), progress));
                if (!res.completed()) throw new IllegalStateException("variant " + v.name() + ": training stopped early; rerun to resume");
                last = lastCheckpoint(run);
            }
            // 3. answer the test prompts K times
            Path answers = dir.resolve("answers.jsonl");
            try (ModelDir md = new ModelDir(last, null, 4096)) {
                AnswerFile.write(md.answerer, v.name(), test, answers, g.samples(), Sampling.lima(), g.maxNewTokens(), 42, 8,
                        m -> progress.accept(v.name() + ": " + m));
            }
            // 4. judge
            Responses rs = Responses.read(answers);
            Evaluation.Likert l = new Evaluation(judge, 4, m -> progress.accept(v.name() + ": " + m))
                    .likert(new Responses(v.name(), rs.byId()), Templates.load("likert", null), g.samples());
            results.add(l);
        }
        Reports.likert(out, results, judge.model());
        return results;
    }

    private static boolean isFinished(Path run) {
        try {
            var pos = new ObjectMapper().readTree(run.resolve("state/trainer.json").toFile());
            var cfg = ConfigLoader.preset(null).file(run.resolve("config.yaml")).load();
            return pos.get("epoch").asInt() > cfg.training().epochs();
        } catch (IOException e) {
            return false;
        }
    }

    private static Path lastCheckpoint(Path run) {
        Path cks = run.resolve("checkpoints");
        if (!Files.isDirectory(cks)) return null;
        try (var s = Files.list(cks)) {
            return s.filter(p -> p.getFileName().toString().matches("epoch-\\d+")).sorted().reduce((a, b) -> b).orElse(null);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
