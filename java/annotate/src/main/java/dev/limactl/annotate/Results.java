package dev.limactl.annotate;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.eval.Evaluation;
import dev.limactl.eval.Reports;
import java.io.IOException;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.commons.csv.CSVFormat;
import org.apache.commons.csv.CSVPrinter;

/** A study's answers out: the export files {@code eval agreement} reads, the agreement table, the win/tie/loss report. */
public final class Results {
    static final List<String> COLUMNS = List.of("annotator", "item", "label", "choice", "shown_order", "shared", "seconds", "note", "answered_at");

    private Results() {}

    /**
     * Writes every committed answer to {@code out}: JSONL (one object per answer) or, for a {@code .csv}
     * name, CSV with a header. Each record has the verdict fields {@code eval agreement} reads
     * ({@code annotator}, {@code item}, {@code label}: win/tie/loss for our model, or the grade) and what was
     * shown and how long it took. The file is replaced whole (written beside it, then renamed).
     */
    public static int export(Study study, Path out) {
        if (Files.isDirectory(out)) throw new IllegalArgumentException("--out " + out + " is a directory: name the file to write (answers.jsonl or answers.csv)");
        List<Study.Answer> answers = study.answers();
        boolean pairwise = study.mode() == Study.Mode.PAIRWISE;
        String text = out.getFileName().toString().endsWith(".csv") ? csv(answers, pairwise) : jsonl(answers, pairwise);
        Path dir = out.toAbsolutePath().getParent();
        try {
            Files.createDirectories(dir);
            Path tmp = Files.createTempFile(dir, "." + out.getFileName() + ".", ".tmp");
            try {
                Files.writeString(tmp, text, StandardCharsets.UTF_8);
                Files.move(tmp, out, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } finally {
                Files.deleteIfExists(tmp);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        return answers.size();
    }

    private static String shownOrder(Study.Answer a, boolean pairwise) {
        return !pairwise ? "single" : a.oursFirst() ? "ours-first" : "ours-second";
    }

    static String jsonl(List<Study.Answer> answers, boolean pairwise) {
        ObjectMapper json = new ObjectMapper();
        StringBuilder sb = new StringBuilder();
        for (Study.Answer a : answers) {
            ObjectNode n = json.createObjectNode();
            n.put("annotator", a.annotator());
            n.put("item", a.item());
            n.put("label", a.label());
            n.put("choice", a.choice());
            n.put("shown_order", shownOrder(a, pairwise));
            n.put("shared", a.shared());
            if (a.seconds() == null) n.putNull("seconds");
            else n.put("seconds", a.seconds());
            if (a.note() == null) n.putNull("note");
            else n.put("note", a.note());
            n.put("answered_at", a.answeredAt());
            sb.append(n).append('\n');
        }
        return sb.toString();
    }

    static String csv(List<Study.Answer> answers, boolean pairwise) {
        StringWriter w = new StringWriter();
        try (CSVPrinter p = new CSVPrinter(w, CSVFormat.RFC4180.builder().setHeader(COLUMNS.toArray(String[]::new)).get())) {
            for (Study.Answer a : answers) {
                p.printRecord(a.annotator(), a.item(), a.label(), a.choice(), shownOrder(a, pairwise),
                        a.shared(), a.seconds() == null ? "" : a.seconds(), a.note() == null ? "" : a.note(), a.answeredAt());
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return w.toString();
    }

    /** Labels per annotator (item key to label), in the annotators' order. */
    public static Map<String, Map<String, String>> byAnnotator(Study study) {
        Map<String, Map<String, String>> out = new LinkedHashMap<>();
        study.annotators().forEach(a -> out.put(a.name(), new LinkedHashMap<>()));
        for (Study.Answer a : study.answers()) out.get(a.annotator()).put(a.item(), a.label());
        return out;
    }

    /** Human-human agreement: every pair of annotators over the items both answered (tie-discounted accuracy and Cohen's kappa). */
    public static List<Evaluation.PairAgreement> agreement(Study study) {
        return Evaluation.pairs(byAnnotator(study), "tie");
    }

    /**
     * The study's win/tie/loss (pairwise) or grade counts (absolute) as the evaluation reports write them
     * (JSON, Markdown, PNG, SVG) in {@code dir}: human-pairwise.* or human-absolute.*. Returns the PNG's path.
     */
    public static Path report(Study study, Path dir) {
        List<Study.Answer> answers = study.answers();
        if (answers.isEmpty()) throw new dev.limactl.train.RunStateException(study.file() + " has no answers yet: nothing to report");
        Map<String, String> verdicts = new LinkedHashMap<>();
        for (Study.Answer a : answers) verdicts.put(a.annotator() + "/" + a.item(), a.label());
        if (study.mode() == Study.Mode.PAIRWISE) {
            Reports.humanPairwise(dir, study.ours(), new Evaluation.Pairwise(study.baseline(), verdicts), study.annotators().size());
            return dir.resolve("human-pairwise.png");
        }
        Reports.absolute(dir, "human-absolute", study.ours(), new Evaluation.Absolute(verdicts), "human annotators");
        return dir.resolve("human-absolute.png");
    }
}
