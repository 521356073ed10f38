package dev.limactl.eval;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.chat.ChatFormat;
import dev.limactl.data.AtomicFiles;
import dev.limactl.data.Example;
import dev.limactl.data.Turn;
import dev.limactl.engine.Sampling;
import dev.limactl.generate.Answerer;
import dev.limactl.generate.ModelDir;
import dev.limactl.train.Perplexity;
import java.awt.Color;
import java.awt.Rectangle;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;
import org.jfree.svg.SVGGraphics2D;

/**
 * LIMA's checkpoint choice (Section 3, Appendix B): perplexity does not track quality, so each epoch
 * checkpoint in a range answers the dev prompts, a judge scores the answers (Likert 1-6), and the
 * best judged checkpoint wins (ties: the lower dev perplexity, then the earlier epoch).
 */
public final class CheckpointSelection {
    public record Row(int epoch, String checkpoint, double devPerplexity, Stats.MeanCi likert, long unparsable) {}

    private CheckpointSelection() {}

    public static List<Row> run(Path runDir, int from, int to, List<Example> dev, Judge judge, Templates template, Sampling sampling,
                                int samples, int maxNewTokens, Consumer<String> progress) {
        List<Row> rows = new ArrayList<>();
        for (int e = from; e <= to; e++) {
            Path ck = runDir.resolve("checkpoints").resolve(String.format("epoch-%02d", e));
            if (!Files.isDirectory(ck)) throw new IllegalArgumentException("run " + runDir + " has no checkpoint for epoch " + e + " (" + ck + ")");
            try (ModelDir md = new ModelDir(ck, null, 4096)) {
                List<Answerer.Request> reqs = new ArrayList<>();
                List<String> ids = new ArrayList<>();
                for (Example x : dev) {
                    List<Turn> conv = new ArrayList<>(x.turns());
                    while (!conv.isEmpty() && conv.get(conv.size() - 1).role().equals(Turn.ASSISTANT)) conv.remove(conv.size() - 1);
                    for (int k = 0; k < samples; k++) {
                        reqs.add(new Answerer.Request(conv, sampling, maxNewTokens, List.of(), x.id().hashCode() * 31L + k));
                        ids.add(x.id() + "#" + k);
                    }
                }
                List<Answerer.Answer> answers = new ArrayList<>();
                for (int i = 0; i < reqs.size(); i += 8) answers.addAll(md.answerer.generate(reqs.subList(i, Math.min(reqs.size(), i + 8)), (a, b) -> { }));
                Map<String, List<Responses.Item>> byId = new LinkedHashMap<>();
                for (int i = 0; i < reqs.size(); i++) {
                    String id = ids.get(i).substring(0, ids.get(i).lastIndexOf('#'));
                    List<Turn> conv = reqs.get(i).conversation();
                    byId.computeIfAbsent(id, k -> new ArrayList<>()).add(new Responses.Item(id, i % samples, conv.get(conv.size() - 1).text(),
                            answers.get(i).text()));
                }
                saveAnswers(runDir.resolve("select").resolve(ck.getFileName() + ".answers.jsonl"), byId);
                Evaluation.Likert l = new Evaluation(judge, 4, progress).likert(new Responses(ck.getFileName().toString(), byId), template, samples);
                double ppl = Perplexity.of(md.model, new ChatFormat(md.tokenizer, md.eotId, 2048), dev, 8192).perplexity();
                rows.add(new Row(e, ck.toString(), ppl, l.meanCi(), l.unparsable()));
                progress.accept(String.format("epoch %d: Likert %.2f, dev perplexity %.2f", e, l.meanCi().mean(), ppl));
            }
        }
        return rows;
    }

    public static Row best(List<Row> rows) {
        if (rows.isEmpty()) throw new IllegalArgumentException("no checkpoints to choose from");
        if (!judged(rows)) {  // fall back, and say so (see basis)
            return rows.stream().min(Comparator.comparingDouble(Row::devPerplexity).thenComparing(Row::epoch)).orElseThrow();
        }
        return rows.stream().filter(r -> r.likert().n() > 0)
                .max(Comparator.comparingDouble((Row r) -> r.likert().mean()).thenComparing(Row::devPerplexity, Comparator.reverseOrder())
                        .thenComparing(Row::epoch, Comparator.reverseOrder()))
                .orElseThrow();
    }

    static boolean judged(List<Row> rows) {
        return rows.stream().anyMatch(r -> r.likert().n() > 0);
    }

    /** What the choice rests on: judged quality, or dev perplexity when the judge gave no parsable score at all. */
    public static String basis(List<Row> rows) {
        return judged(rows) ? "judged quality (Likert)"
                : "dev perplexity, because the judge gave no parsable score (check the judge and its answers in select/judge-cache.jsonl)";
    }

    public static void report(Path dir, List<Row> rows, Row best, String judgeModel) {
        try {
            Files.createDirectories(dir);
            ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
            Files.writeString(dir.resolve("select.json"),
                    json.writeValueAsString(Map.of("judge", judgeModel, "rows", rows, "best", best, "basis", basis(rows))) + "\n");
            StringBuilder md = new StringBuilder("# Checkpoint selection\n\nJudge: " + judgeModel
                    + " (Likert 1-6 on the dev set, mean and 95% CI). Chosen: **epoch " + best.epoch() + "**, by " + basis(rows) + ".\n\n"
                    + "| epoch | Likert | 95% CI | unparsable | dev perplexity |\n|---|---|---|---|---|\n");
            for (Row r : rows) {
                md.append(String.format("| %d%s | %.2f | [%.2f, %.2f] | %d | %.2f |%n", r.epoch(), r == best ? " (chosen)" : "",
                        r.likert().mean(), r.likert().low(), r.likert().high(), r.unparsable(), r.devPerplexity()));
            }
            Files.writeString(dir.resolve("select.md"), md.toString());
            XYSeries s = new XYSeries("epoch checkpoints");
            rows.forEach(r -> s.add(r.devPerplexity(), r.likert().mean()));
            JFreeChart c = ChartFactory.createScatterPlot("Dev perplexity vs judged quality", "dev perplexity", "Likert (1-6)",
                    new XYSeriesCollection(s), PlotOrientation.VERTICAL, false, false, false);
            c.setBackgroundPaint(Color.WHITE);
            ChartUtils.saveChartAsPNG(dir.resolve("select.png").toFile(), c, 700, 450);
            SVGGraphics2D g = new SVGGraphics2D(700, 450);
            c.draw(g, new Rectangle(0, 0, 700, 450));
            Files.writeString(dir.resolve("select.svg"), g.getSVGDocument());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the selection report in " + dir + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    /** Marks the choice in the run: selected.json, and checkpoints/selected pointing at it. */
    public static void apply(Path runDir, Row best) {
        try {
            ObjectNode o = new ObjectMapper().createObjectNode().put("epoch", best.epoch()).put("checkpoint", best.checkpoint())
                    .put("likert", best.likert().mean()).put("dev_perplexity", best.devPerplexity());
            AtomicFiles.writeString(runDir.resolve("selected.json"), o.toPrettyString() + "\n");
            Path link = runDir.resolve("checkpoints").resolve("selected");
            Files.deleteIfExists(link);
            Files.createSymbolicLink(link, Path.of(best.checkpoint()).getFileName());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot mark the selected checkpoint in " + runDir + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    private static void saveAnswers(Path file, Map<String, List<Responses.Item>> byId) {
        try {
            Files.createDirectories(file.getParent());
            ObjectMapper json = new ObjectMapper();
            StringBuilder sb = new StringBuilder();
            for (List<Responses.Item> l : byId.values()) {
                for (Responses.Item it : l) {
                    sb.append(json.writeValueAsString(Map.of("id", it.id(), "sample", it.sample(), "prompt", it.prompt(), "response", it.response())))
                            .append('\n');
                }
            }
            Files.writeString(file, sb.toString());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }
}
