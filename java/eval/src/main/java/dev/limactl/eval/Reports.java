package dev.limactl.eval;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.awt.Color;
import java.awt.Rectangle;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.renderer.category.StatisticalBarRenderer;
import org.jfree.data.category.DefaultCategoryDataset;
import org.jfree.data.statistics.DefaultStatisticalCategoryDataset;
import org.jfree.svg.SVGGraphics2D;

/** Evaluation reports: JSON for machines, Markdown for people, bar charts (PNG and SVG) like the paper's figures. */
public final class Reports {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private Reports() {}

    public static void pairwise(Path dir, String ours, List<Evaluation.Pairwise> results, String judgeModel) {
        pairwise(dir, "pairwise", ours, results, judgeModel, "Judge: " + judgeModel + ". Each prompt asked in both orders; disagreement counts as a tie.");
    }

    /**
     * The paper's Figure 1 from a human study: each annotator's verdict on each item they answered
     * (ours shown on a random side), as shares of all human verdicts; written as human-pairwise.*.
     */
    public static void humanPairwise(Path dir, String ours, Evaluation.Pairwise verdicts, int annotators) {
        pairwise(dir, "human-pairwise", ours, List.of(verdicts), "human annotators",
                "Human annotators: " + annotators + ". Each verdict of each annotator counts once; our response was shown on a random side.");
    }

    private static void pairwise(Path dir, String name, String ours, List<Evaluation.Pairwise> results, String judgeModel, String protocol) {
        StringBuilder md = new StringBuilder("# Pairwise preference: " + ours + "\n\n" + protocol + "\n\n| baseline | " + ours
                + " wins | tie | baseline wins | unparsable |\n|---|---|---|---|---|\n");
        DefaultCategoryDataset ds = new DefaultCategoryDataset();
        for (Evaluation.Pairwise p : results) {
            md.append(String.format("| %s | %.1f%% | %.1f%% | %.1f%% | %d |%n", p.baseline(), p.percent("win"), p.percent("tie"),
                    p.percent("loss"), p.count("unparsable")));
            ds.addValue(p.percent("win"), ours + " wins", p.baseline());
            ds.addValue(p.percent("tie"), "tie", p.baseline());
            ds.addValue(p.percent("loss"), "baseline wins", p.baseline());
        }
        JFreeChart c = ChartFactory.createStackedBarChart("Pairwise preference (" + ours + ")", "baseline", "% of prompts", ds,
                PlotOrientation.HORIZONTAL, true, false, false);
        c.getCategoryPlot().getRangeAxis().setRange(0, 100);
        if (results.stream().allMatch(p -> p.count("win") + p.count("tie") + p.count("loss") == 0)) noScores(c, md);
        write(dir, name, Map.of("ours", ours, "judge", judgeModel, "results", results), md.toString(), c);
    }

    public static void absolute(Path dir, String system, Evaluation.Absolute a, String judgeModel) {
        absolute(dir, "absolute", system, a, judgeModel);
    }

    public static void absolute(Path dir, String name, String system, Evaluation.Absolute a, String judgeModel) {
        DefaultCategoryDataset ds = new DefaultCategoryDataset();
        StringBuilder md = new StringBuilder("# Absolute grades: " + system + "\n\nJudge: " + judgeModel + "\n\n| grade | count |\n|---|---|\n");
        for (String g : List.of("fail", "pass", "excellent", "unparsable")) {
            md.append("| ").append(g).append(" | ").append(a.count(g)).append(" |\n");
            if (!g.equals("unparsable")) ds.addValue(a.count(g), system, g);
        }
        JFreeChart c = ChartFactory.createBarChart("Absolute grades (" + system + ")", "grade", "responses", ds);
        if (a.count("fail") + a.count("pass") + a.count("excellent") == 0) {
            c.getCategoryPlot().getRangeAxis().setRange(0, 1);
            noScores(c, md);
        }
        write(dir, name, Map.of("system", system, "judge", judgeModel, "grades", a.grades()), md.toString(), c);
    }

    public static void likert(Path dir, List<Evaluation.Likert> results, String judgeModel) {
        DefaultStatisticalCategoryDataset ds = new DefaultStatisticalCategoryDataset();
        StringBuilder md = new StringBuilder("# Likert helpfulness (1-6)\n\nJudge: " + judgeModel
                + ". Mean with a 95% two-sided confidence interval (t distribution).\n\n| system | mean | 95% CI | scored | unparsable |\n|---|---|---|---|---|\n");
        for (Evaluation.Likert l : results) {
            Stats.MeanCi m = l.meanCi();
            md.append(String.format("| %s | %.2f | [%.2f, %.2f] | %d | %d |%n", l.system(), m.mean(), m.low(), m.high(), m.n(), l.unparsable()));
            ds.add(m.mean(), Double.isNaN(m.halfWidth()) ? 0 : m.halfWidth(), "mean", l.system());
        }
        JFreeChart c = ChartFactory.createLineChart("Likert helpfulness", "system", "score (1-6)", ds);
        if (results.stream().allMatch(l -> l.meanCi().n() == 0)) noScores(c, md);
        c.getCategoryPlot().setRenderer(new StatisticalBarRenderer());
        c.getCategoryPlot().getRangeAxis().setRange(0, 6.5);
        write(dir, "likert", Map.of("judge", judgeModel, "results", results), md.toString(), c);
    }

    /** A chart (and report) of a judge whose every answer was unparsable says so, instead of empty axes. */
    private static void noScores(JFreeChart c, StringBuilder md) {
        String why = "No judged scores: every judge answer was unparsable (see the judge cache for what it said).";
        c.addSubtitle(new org.jfree.chart.title.TextTitle(why));
        md.append("\n**").append(why).append("**\n");
    }

    private static void write(Path dir, String name, Object json, String markdown, JFreeChart chart) {
        try {
            Files.createDirectories(dir);
            Files.writeString(dir.resolve(name + ".json"), JSON.writeValueAsString(json) + "\n");
            Files.writeString(dir.resolve(name + ".md"), markdown);
            chart.setBackgroundPaint(Color.WHITE);
            ChartUtils.saveChartAsPNG(dir.resolve(name + ".png").toFile(), chart, 800, 450);
            SVGGraphics2D g = new SVGGraphics2D(800, 450);
            chart.draw(g, new Rectangle(0, 0, 800, 450));
            Files.writeString(dir.resolve(name + ".svg"), g.getSVGDocument());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the " + name + " report in " + dir + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }
}
