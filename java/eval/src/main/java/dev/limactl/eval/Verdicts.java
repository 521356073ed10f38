package dev.limactl.eval;

import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reading the judge's choice out of free text, robustly and never by default: scanning from the end,
 * the last non-empty line that is a valid choice (after stripping "Answer:", quotes, bold marks and
 * end punctuation) wins, or the last line if it ends with one; a choice buried in the reasoning is
 * not guessed at. Otherwise the answer is unparsable (null), which callers count and report.
 */
public final class Verdicts {
    private Verdicts() {}

    private static final Pattern LIKERT = Pattern.compile("(?<![\\w.])([1-6])(?![\\w.])");
    private static final Pattern PAIR = Pattern.compile("(?i)(?<![\\w])(A|B|tie|neither)(?![\\w])");
    private static final Pattern GRADE = Pattern.compile("(?i)(?<![\\w])(fail|pass|excellent)(?![\\w])");

    /** 1..6, or null. */
    public static Integer likert(String answer) {
        String v = choice(answer, LIKERT);
        return v == null ? null : Integer.parseInt(v);
    }

    /** "A", "B" or "tie", or null. */
    public static String pairwise(String answer) {
        String v = choice(answer, PAIR);
        if (v == null) return null;
        v = v.toLowerCase(Locale.ROOT);
        return v.equals("a") ? "A" : v.equals("b") ? "B" : "tie";
    }

    /** "fail", "pass" or "excellent", or null. */
    public static String absolute(String answer) {
        String v = choice(answer, GRADE);
        return v == null ? null : v.toLowerCase(Locale.ROOT);
    }

    private static String choice(String answer, Pattern p) {
        List<String> lines = Judge.lines(answer.replace("*", "").replace("\"", ""));
        for (int i = lines.size() - 1; i >= 0; i--) {
            String l = lines.get(i).replaceAll("[.!:;]+$", "").replaceFirst("(?i)^(final )?(answer|choice|verdict|rating|score)\\s*[:=-]?\\s*", "");
            Matcher m = p.matcher(l);
            if (m.matches()) return m.group(1);
            if (i == lines.size() - 1) {
                String last = null;
                while (m.find()) last = m.group(1);
                if (last != null && l.endsWith(last)) return last;
            }
        }
        return null;
    }
}
