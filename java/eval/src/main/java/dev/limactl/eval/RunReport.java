package dev.limactl.eval;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.awt.Color;
import java.awt.Rectangle;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;
import org.jfree.svg.SVGGraphics2D;

/**
 * One HTML page a user opens in a browser to follow or review a run: charts of loss, learning rate,
 * gradient norm, tokens/s and dev perplexity per epoch from metrics.jsonl, the checkpoints, and the
 * checkpoint selection and evaluation reports found in the run directory. Self-contained (the charts
 * are inline SVG), so it can be copied or mailed as one file.
 */
public final class RunReport {
    private RunReport() {}

    /** What the report holds, for the caller to say. */
    public record Summary(Path file, int steps, int epochsWithPerplexity, List<String> sections) {}

    public static Summary write(Path runDir, Path out) {
        Path metrics = runDir.resolve("metrics.jsonl");
        if (!Files.isRegularFile(metrics)) throw new IllegalArgumentException(runDir + " is not a run directory (no metrics.jsonl)");
        XYSeries loss = new XYSeries("loss"), lr = new XYSeries("lr"), grad = new XYSeries("grad norm"), tps = new XYSeries("tokens/s"),
                ppl = new XYSeries("dev perplexity");
        ObjectMapper json = new ObjectMapper();
        List<String> lines;
        try {
            lines = dev.limactl.data.Utf8Text.lines(metrics);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + metrics + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        int steps = 0;
        for (int i = 0; i < lines.size(); i++) {
            if (lines.get(i).isBlank()) continue;
            JsonNode n;
            try {
                n = json.readTree(lines.get(i));
            } catch (IOException e) {
                if (i == lines.size() - 1) break;  // a last line cut by a kill (the run resumes and redoes it)
                throw new IllegalArgumentException(metrics + ":" + (i + 1) + ": not a metrics line");
            }
            if (!n.path("step").isNumber()) throw new IllegalArgumentException(metrics + ":" + (i + 1) + ": no step number");
            long step = n.get("step").asLong();
            steps++;
            add(loss, step, n.path("loss"));
            add(lr, step, n.path("lr"));
            add(grad, step, n.path("grad_norm"));
            add(tps, step, n.path("tokens_per_s"));
            if (n.has("dev_perplexity")) add(ppl, n.path("epoch").asInt(), n.path("dev_perplexity"));
        }
        List<String> sections = new ArrayList<>();
        StringBuilder b = new StringBuilder("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>limactl run "
                + esc(runDir.getFileName().toString()) + "</title><style>body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1700px}"
                + ".charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:1em}"
                + "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em}pre{background:#f4f4f4;padding:.6em}</style></head><body>");
        b.append("<h1>limactl run ").append(esc(runDir.toAbsolutePath().toString())).append("</h1><p>").append(steps)
                .append(" optimiser steps").append(ppl.getItemCount() == 0 ? "" : ", dev perplexity for " + ppl.getItemCount() + " epoch(s)")
                .append(".</p><div class=\"charts\">");
        b.append(chart("Training loss", "step", "loss", loss)).append(chart("Learning rate", "step", "lr", lr))
                .append(chart("Gradient norm (before clipping)", "step", "norm", grad)).append(chart("Throughput", "step", "tokens/s", tps));
        sections.addAll(List.of("loss", "learning rate", "gradient norm", "throughput"));
        if (ppl.getItemCount() > 0) {
            b.append(chart("Dev perplexity", "epoch", "perplexity", ppl));
            sections.add("dev perplexity");
        }
        b.append("</div>");
        checkpoints(runDir, b, sections, json);
        for (String[] r : new String[][] {{"select/select.md", "Checkpoint selection (limactl select)"}, {"selected.json", "Selected checkpoint"}}) {
            Path f = runDir.resolve(r[0]);
            if (Files.isRegularFile(f)) {
                b.append("<h2>").append(r[1]).append("</h2><pre>").append(esc(read(f))).append("</pre>");
                sections.add(r[1]);
            }
        }
        Path eval = runDir.resolve("eval");
        if (Files.isDirectory(eval)) {
            try (Stream<Path> s = Files.walk(eval)) {
                for (Path f : s.filter(p -> p.getFileName().toString().endsWith(".md")).sorted().toList()) {
                    b.append("<h2>Evaluation: ").append(esc(runDir.relativize(f).toString())).append("</h2><pre>").append(esc(read(f))).append("</pre>");
                    sections.add("evaluation " + runDir.relativize(f));
                }
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + eval + ": " + dev.limactl.data.IoErrors.why(e), e);
            }
        }
        b.append("</body></html>\n");
        dev.limactl.data.AtomicFiles.writeString(out, b.toString());
        return new Summary(out, steps, ppl.getItemCount(), sections);
    }

    private static void checkpoints(Path runDir, StringBuilder b, List<String> sections, ObjectMapper json) {
        Path dir = runDir.resolve("checkpoints");
        if (!Files.isDirectory(dir)) return;
        List<Path> cks;
        try (Stream<Path> s = Files.list(dir)) {
            cks = s.filter(p -> p.getFileName().toString().matches("epoch-\\d+")).sorted().toList();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list " + dir + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        if (cks.isEmpty()) return;
        b.append("<h2>Checkpoints</h2><table><tr><th>checkpoint</th><th>step</th><th>dev perplexity</th></tr>");
        for (Path ck : cks) {
            JsonNode meta = null;
            try {
                meta = json.readTree(ck.resolve("limactl.json").toFile());
            } catch (IOException e) {
                // a checkpoint without a readable limactl.json is listed without its figures
            }
            b.append("<tr><td>").append(esc(ck.getFileName().toString())).append("</td><td>")
                    .append(meta == null ? "" : meta.path("step").asText()).append("</td><td>")
                    .append(meta == null || !meta.has("dev_perplexity") ? "n/a" : String.format(Locale.ROOT, "%.3f", meta.get("dev_perplexity").asDouble()))
                    .append("</td></tr>");
        }
        b.append("</table>");
        sections.add("checkpoints");
    }

    private static void add(XYSeries s, double x, JsonNode v) {
        if (v.isNumber() && Double.isFinite(v.asDouble())) s.add(x, v.asDouble());
    }

    private static String chart(String title, String x, String y, XYSeries series) {
        JFreeChart c = ChartFactory.createXYLineChart(title, x, y, new XYSeriesCollection(series), PlotOrientation.VERTICAL, false, false, false);
        c.setBackgroundPaint(Color.WHITE);
        SVGGraphics2D g = new SVGGraphics2D(620, 340);
        c.draw(g, new Rectangle(0, 0, 620, 340));
        return "<figure>" + g.getSVGElement() + "</figure>";
    }

    private static String read(Path f) {
        try {
            return dev.limactl.data.Utf8Text.read(f);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + f + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    private static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
    }
}
