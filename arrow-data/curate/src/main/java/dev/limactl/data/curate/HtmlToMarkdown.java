package dev.limactl.data.curate;

import org.jsoup.Jsoup;
import org.jsoup.nodes.Element;
import org.jsoup.nodes.Node;
import org.jsoup.nodes.TextNode;

/**
 * StackExchange HTML bodies to Markdown as LIMA prepared them: code blocks, inline code, lists,
 * quotes, headings and emphasis kept; links reduced to their text; images and every other tag dropped.
 * Parsed with jsoup (a real HTML parser), never with regular expressions.
 */
public final class HtmlToMarkdown {
    private HtmlToMarkdown() {}

    public static String convert(String html) {
        StringBuilder sb = new StringBuilder();
        for (Node n : Jsoup.parseBodyFragment(html).body().childNodes()) block(n, sb, "");
        return tidy(sb.toString());
    }

    private static void block(Node n, StringBuilder sb, String indent) {
        if (n instanceof TextNode t) {
            if (!t.isBlank()) sb.append(t.text());
            return;
        }
        if (!(n instanceof Element e)) return;
        switch (e.normalName()) {
            case "p", "div" -> {
                sb.append("\n\n").append(indent);
                inline(e, sb);
                sb.append("\n\n");
            }
            case "pre" -> {
                String code = e.wholeText();
                sb.append("\n\n").append(indent).append("```\n").append(code.endsWith("\n") ? code : code + "\n")
                        .append(indent).append("```\n\n");
            }
            case "ul", "ol" -> {
                boolean ordered = e.normalName().equals("ol");
                int i = 1;
                sb.append("\n\n");
                for (Element li : e.children()) {
                    if (!li.normalName().equals("li")) continue;
                    sb.append(indent).append(ordered ? (i++) + ". " : "- ");
                    listItem(li, sb, indent + "   ");
                    sb.append('\n');
                }
                sb.append('\n');
            }
            case "blockquote" -> {
                StringBuilder inner = new StringBuilder();
                for (Node c : e.childNodes()) block(c, inner, "");
                sb.append("\n\n");
                for (String line : tidy(inner.toString()).split("\n")) sb.append(indent).append("> ").append(line).append('\n');
                sb.append('\n');
            }
            case "h1", "h2", "h3", "h4", "h5", "h6" -> {
                sb.append("\n\n").append("#".repeat(e.normalName().charAt(1) - '0')).append(' ');
                inline(e, sb);
                sb.append("\n\n");
            }
            case "hr" -> sb.append("\n\n---\n\n");
            case "img", "script", "style" -> { }
            default -> inline(e, sb);
        }
    }

    private static void listItem(Element li, StringBuilder sb, String indent) {
        boolean first = true;
        for (Node c : li.childNodes()) {
            if (c instanceof Element e && (e.normalName().equals("ul") || e.normalName().equals("ol") || e.normalName().equals("pre"))) {
                StringBuilder inner = new StringBuilder();
                block(e, inner, indent);
                sb.append('\n').append(inner.toString().replaceAll("^\n+|\n+$", ""));
            } else if (c instanceof Element e && e.normalName().equals("p")) {
                if (!first) sb.append('\n').append(indent);
                inline(e, sb);
            } else {
                inlineNode(c, sb);
            }
            first = false;
        }
    }

    private static void inline(Element e, StringBuilder sb) {
        for (Node c : e.childNodes()) inlineNode(c, sb);
    }

    private static void inlineNode(Node n, StringBuilder sb) {
        if (n instanceof TextNode t) {
            sb.append(t.text());
            return;
        }
        if (!(n instanceof Element e)) return;
        switch (e.normalName()) {
            case "code" -> sb.append('`').append(e.wholeText()).append('`');
            case "strong", "b" -> wrap(e, sb, "**");
            case "em", "i" -> wrap(e, sb, "*");
            case "br" -> sb.append('\n');
            case "img", "script", "style" -> { }
            case "pre", "ul", "ol", "blockquote", "p", "div", "h1", "h2", "h3", "h4", "h5", "h6" -> block(e, sb, "");
            default -> inline(e, sb);  // links and any other tag: their text only
        }
    }

    private static void wrap(Element e, StringBuilder sb, String mark) {
        StringBuilder inner = new StringBuilder();
        inline(e, inner);
        String s = inner.toString();
        if (s.isBlank()) return;
        sb.append(mark).append(s.strip()).append(mark);
    }

    /** Collapses runs of blank lines, trims trailing spaces, keeps code blocks' lines as they are. */
    static String tidy(String s) {
        StringBuilder out = new StringBuilder();
        int blank = 0;
        boolean inCode = false;
        for (String line : s.split("\n", -1)) {
            if (line.strip().startsWith("```")) inCode = !inCode;
            String l = inCode ? line : line.stripTrailing();
            if (!inCode && l.isBlank()) {
                if (++blank > 1) continue;
                out.append('\n');
                continue;
            }
            blank = 0;
            out.append(l).append('\n');
        }
        return out.toString().strip();
    }
}
