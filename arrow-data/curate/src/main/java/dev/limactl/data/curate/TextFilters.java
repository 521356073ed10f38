package dev.limactl.data.curate;

import java.util.List;
import java.util.Locale;
import java.util.regex.Pattern;

/** LIMA's answer filters: first-person writing and references to other answers or the site. */
public final class TextFilters {
    private final Pattern firstPerson;
    private final List<String> references;

    /** firstPerson: whole words, matched as written and capitalised; references: phrases, any case. */
    public TextFilters(List<String> firstPerson, List<String> references) {
        StringBuilder alt = new StringBuilder();
        for (String w : firstPerson) {
            if (alt.length() > 0) alt.append('|');
            alt.append(Pattern.quote(w));
            String cap = w.isEmpty() ? w : Character.toUpperCase(w.charAt(0)) + w.substring(1);
            if (!cap.equals(w)) alt.append('|').append(Pattern.quote(cap));
        }
        this.firstPerson = firstPerson.isEmpty() ? null : Pattern.compile("(?<![\\w'’])(" + alt + ")(?![\\w'’])");
        this.references = references.stream().map(r -> r.toLowerCase(Locale.ROOT)).toList();
    }

    /** Markdown without code (code may use any identifiers). */
    static String prose(String markdown) {
        return markdown.replaceAll("(?s)```.*?```", " ").replaceAll("`[^`\n]*`", " ");
    }

    /** The first first-person word found outside code, or null. */
    public String firstPerson(String markdown) {
        if (firstPerson == null) return null;
        var m = firstPerson.matcher(prose(markdown));
        return m.find() ? m.group(1) : null;
    }

    /** The first reference phrase found, or null. */
    public String reference(String markdown) {
        String low = prose(markdown).toLowerCase(Locale.ROOT);
        for (String r : references) if (low.contains(r)) return r;
        return null;
    }
}
