package dev.limactl.annotate;

import dev.limactl.eval.Evaluation;
import java.util.List;
import java.util.Locale;
import org.commonmark.parser.Parser;
import org.commonmark.renderer.html.HtmlRenderer;

/**
 * The app's HTML, rendered on the server. Model output and every other text from a file pass through
 * {@link #markdown} (CommonMark with raw HTML escaped and unsafe link schemes removed) or {@link #esc};
 * nothing from a response reaches the page as markup, and the pages carry no inline script (the
 * Content-Security-Policy allows only /static/app.js).
 */
final class Pages {
    private static final Parser PARSER = Parser.builder().build();
    private static final HtmlRenderer HTML = HtmlRenderer.builder().escapeHtml(true).sanitizeUrls(true).build();

    private Pages() {}

    static String esc(String s) {
        if (s == null) return "";
        StringBuilder b = new StringBuilder(s.length() + 16);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '<' -> b.append("&lt;");
                case '>' -> b.append("&gt;");
                case '&' -> b.append("&amp;");
                case '"' -> b.append("&quot;");
                case '\'' -> b.append("&#39;");
                default -> b.append(c);
            }
        }
        return b.toString();
    }

    /** Markdown and code rendered as CommonMark with any HTML in the text shown as text. */
    static String markdown(String text) {
        return HTML.render(PARSER.parse(text == null ? "" : text));
    }

    private static String page(String title, String body) {
        return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                + "<title>" + esc(title) + "</title><link rel=\"stylesheet\" href=\"/static/app.css\"></head><body>" + body
                + "<script src=\"/static/app.js\"></script></body></html>\n";
    }

    static String error(int status, String message) {
        return page("Error " + status, "<main class=\"narrow\"><h1>" + status + "</h1><p id=\"error\">" + esc(message) + "</p></main>");
    }

    static String home() {
        return page("limactl annotation study", "<main class=\"narrow\"><h1>limactl annotation study</h1>"
                + "<p>Open the link you were given: it holds your access token.</p></main>");
    }

    /** The annotator page for one item: prompt, the response(s), the answer buttons with their keys, progress, skip, the timer. */
    static String item(Study.Mode mode, String token, String csrf, String annotator, List<Study.Shown> queue, Study.Shown cur, String guidelines) {
        long answered = queue.stream().filter(s -> s.choice() != null).count();
        StringBuilder b = new StringBuilder();
        b.append("<header><span class=\"who\">").append(esc(annotator)).append("</span>")
                .append("<span id=\"progress\" class=\"progress\">").append(answered).append(" of ").append(queue.size()).append(" answered</span>")
                .append("<progress max=\"").append(queue.size()).append("\" value=\"").append(answered).append("\"></progress>")
                .append("<span class=\"timer\" title=\"time on this item\">time <span id=\"timer\">0:00</span></span></header>");
        b.append("<details id=\"guidelines\" class=\"guidelines\"><summary data-key=\"g\">Guidelines <kbd>g</kbd></summary>")
                .append(markdown(guidelines)).append("</details>");
        b.append("<main><h2>Item ").append(cur.position()).append(" of ").append(queue.size())
                .append(cur.choice() == null ? "" : " <span class=\"done\" id=\"answered\">answered: " + esc(cur.choice()) + "</span>").append("</h2>");
        b.append("<section class=\"prompt\"><h3>Prompt</h3><div id=\"prompt\" class=\"md\">").append(markdown(cur.prompt())).append("</div></section>");
        if (mode == Study.Mode.PAIRWISE) {
            b.append("<div class=\"pair\"><section><h3>Response A</h3><div id=\"response-a\" class=\"md\">").append(markdown(cur.left()))
                    .append("</div></section><section><h3>Response B</h3><div id=\"response-b\" class=\"md\">").append(markdown(cur.right()))
                    .append("</div></section></div>");
        } else {
            b.append("<section><h3>Response</h3><div id=\"response\" class=\"md\">").append(markdown(cur.left())).append("</div></section>");
        }
        b.append("<form id=\"answer-form\" method=\"post\" action=\"/a/").append(esc(token)).append("/answer\" data-draft=\"")
                .append(esc(draftKey(token, cur.itemId()))).append("\">")
                .append("<input type=\"hidden\" name=\"csrf\" value=\"").append(esc(csrf)).append("\">")
                .append("<input type=\"hidden\" name=\"item\" value=\"").append(cur.itemId()).append("\">")
                .append("<input type=\"hidden\" id=\"seconds\" name=\"seconds\" value=\"\">")
                .append("<label for=\"note\">Note (optional, kept as a draft until you answer)</label>")
                .append("<textarea id=\"note\" name=\"note\" rows=\"2\" maxlength=\"4000\">").append(esc(cur.note())).append("</textarea><div class=\"buttons\">");
        List<String[]> buttons = mode == Study.Mode.PAIRWISE
                ? List.of(new String[] {"A", "1", "A is better"}, new String[] {"B", "2", "B is better"},
                        new String[] {"neither", "3", "Neither is significantly better"})
                : List.of(new String[] {"fail", "f", "Fail"}, new String[] {"pass", "p", "Pass"}, new String[] {"excellent", "e", "Excellent"});
        for (String[] bt : buttons) {
            b.append("<button type=\"submit\" name=\"choice\" value=\"").append(bt[0]).append("\" id=\"choice-").append(bt[0])
                    .append("\" data-key=\"").append(bt[1]).append("\"").append(bt[0].equals(cur.choice()) ? " class=\"chosen\"" : "").append(">")
                    .append(esc(bt[2])).append(" <kbd>").append(bt[1]).append("</kbd></button>");
        }
        b.append("<a id=\"skip\" class=\"skip\" data-key=\"s\" href=\"/a/").append(esc(token)).append("?after=").append(cur.position())
                .append("\">Skip for now <kbd>s</kbd></a></div></form>");
        b.append(navigation(token, queue, cur.position())).append("</main>");
        return page("Item " + cur.position() + " - limactl annotation", b.toString());
    }

    static String draftKey(String token, int itemId) {
        // the token is hashed so the draft key in the browser's storage is not itself a credential
        return "limactl-draft:" + Integer.toHexString(token.hashCode()) + ":" + itemId;
    }

    private static String navigation(String token, List<Study.Shown> queue, int current) {
        StringBuilder b = new StringBuilder("<nav aria-label=\"items\" class=\"items\"><h3>Your items</h3><ol>");
        for (Study.Shown s : queue) {
            b.append("<li><a href=\"/a/").append(esc(token)).append("?item=").append(s.itemId()).append("\" class=\"")
                    .append(s.choice() == null ? "open" : "answered").append(s.position() == current ? " current" : "").append("\">")
                    .append(s.position()).append(s.choice() == null ? "" : " &#10003;").append("</a></li>");
        }
        return b.append("</ol></nav>").toString();
    }

    static String done(String token, String annotator, List<Study.Shown> queue) {
        return page("Done - limactl annotation", "<header><span class=\"who\">" + esc(annotator) + "</span><span id=\"progress\" class=\"progress\">"
                + queue.size() + " of " + queue.size() + " answered</span></header><main><h2 id=\"all-done\">All your items are answered. Thank you!</h2>"
                + "<p>You can still open an item below and change your answer.</p>" + navigation(token, queue, -1) + "</main>");
    }

    /** The owner's page: progress per annotator, the verdicts, agreement between annotators, the chart and the exports. */
    static String owner(Study study, String token, List<Study.Answer> answers, List<Evaluation.PairAgreement> pairs) {
        StringBuilder b = new StringBuilder("<main><h1>Study results</h1><p>").append(esc(study.mode() == Study.Mode.PAIRWISE
                ? study.ours() + " against " + study.baseline() : study.ours() + ", graded")).append(": ").append(study.itemCount())
                .append(" items.</p><h2>Annotators</h2><table id=\"annotators\"><tr><th>annotator</th><th>answered</th><th>assigned</th><th>median seconds</th></tr>");
        for (Study.Annotator a : study.annotators()) {
            List<Study.Answer> mine = answers.stream().filter(x -> x.annotator().equals(a.name())).toList();
            double[] secs = mine.stream().filter(x -> x.seconds() != null).mapToDouble(Study.Answer::seconds).sorted().toArray();
            b.append("<tr><td>").append(esc(a.name())).append("</td><td>").append(mine.size()).append("</td><td>")
                    .append(study.queue(a.name()).size()).append("</td><td>")
                    .append(secs.length == 0 ? "n/a" : String.format(Locale.ROOT, "%.1f", secs[secs.length / 2])).append("</td></tr>");
        }
        b.append("</table><h2>Verdicts</h2><table id=\"verdicts\"><tr>");
        List<String> labels = study.mode() == Study.Mode.PAIRWISE ? List.of("win", "tie", "loss") : Study.ABSOLUTE_CHOICES;
        for (String l : labels) b.append("<th>").append(l).append("</th>");
        b.append("</tr><tr>");
        for (String l : labels) {
            long n = answers.stream().filter(x -> x.label().equals(l)).count();
            b.append("<td>").append(n).append(answers.isEmpty() ? "" : String.format(Locale.ROOT, " (%.1f%%)", 100.0 * n / answers.size())).append("</td>");
        }
        b.append("</tr></table>");
        if (!answers.isEmpty()) b.append("<p><img src=\"/owner/").append(esc(token)).append("/chart.png\" alt=\"verdict chart\" width=\"800\" height=\"450\"></p>");
        b.append("<h2>Agreement between annotators</h2><p>Over the items both answered: tie-discounted accuracy (LIMA Section 4.1: 1 if equal,"
                + " 0.5 if exactly one said tie, else 0) with a 95% Wilson interval, and Cohen's kappa.</p><table id=\"agreement\">"
                + "<tr><th>annotators</th><th>items</th><th>tie-discounted</th><th>95% interval</th><th>kappa</th></tr>");
        for (Evaluation.PairAgreement p : pairs) {
            var s = p.agreement().score();
            b.append("<tr><td>").append(esc(p.a())).append(" / ").append(esc(p.b())).append("</td><td>").append(s.n()).append("</td><td>")
                    .append(s.n() == 0 ? "n/a" : String.format(Locale.ROOT, "%.3f", s.mean())).append("</td><td>")
                    .append(s.n() == 0 ? "n/a" : String.format(Locale.ROOT, "[%.3f, %.3f]", s.low(), s.high())).append("</td><td>")
                    .append(Double.isNaN(p.agreement().kappa()) ? "n/a" : String.format(Locale.ROOT, "%.3f", p.agreement().kappa())).append("</td></tr>");
        }
        b.append("</table><h2>Export</h2><p><a href=\"/owner/").append(esc(token)).append("/export.jsonl\">answers as JSONL</a> &middot; <a href=\"/owner/")
                .append(esc(token)).append("/export.csv\">answers as CSV</a></p></main>");
        return page("Study results - limactl annotation", b.toString());
    }
}
