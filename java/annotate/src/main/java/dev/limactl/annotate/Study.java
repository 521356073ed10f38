package dev.limactl.annotate;

import dev.limactl.eval.Responses;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.SecureRandom;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.regex.Pattern;

/**
 * A human evaluation study (LIMA Section 4, Appendix C) in one SQLite file in WAL mode: the items
 * (prompt, our response, the baseline's), the annotators and their access tokens, each annotator's
 * items in a random order with a random side for our response (stored, so a reload shows the same
 * page; model names are never shown), and the answers, each committed before the page moves on.
 *
 * <p>Every call opens its own connection, so concurrent annotators are concurrent SQLite
 * connections: readers never block in WAL mode and writers wait on the busy timeout.
 */
public final class Study {
    /** Pairwise: which of two responses is better ("A", "B" or "neither" as shown). Absolute: one response graded. */
    public enum Mode { PAIRWISE, ABSOLUTE }

    public static final List<String> PAIRWISE_CHOICES = List.of("A", "B", "neither");
    public static final List<String> ABSOLUTE_CHOICES = List.of("fail", "pass", "excellent");
    static final int SCHEMA_VERSION = 1;
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}");
    private static final int MAX_NOTE = 4000;

    private final Path file;
    private final String url;
    private final Map<String, String> meta;

    /** What a study is made of: the responses, who annotates, how many items every annotator sees. */
    public record Spec(Mode mode, Path ours, Path baseline, List<String> annotators, int overlap, String guidelines, long seed) {}

    public record Annotator(String name, String token) {}

    /** One item as one annotator sees it: position in their queue, the text left and right, what they answered. */
    public record Shown(int itemId, String item, int position, boolean oursFirst, boolean shared, String prompt, String left, String right,
                        String choice, String note) {}

    /** One committed answer, with the label it means for our model: win/tie/loss, or the grade. */
    public record Answer(String annotator, int itemId, String item, boolean oursFirst, boolean shared, String choice, String label,
                         Double seconds, String note, String answeredAt) {}

    private Study(Path file) {
        this.file = file;
        this.url = "jdbc:sqlite:" + file.toAbsolutePath();
        this.meta = readMeta();
    }

    public Path file() {
        return file;
    }

    public Mode mode() {
        return Mode.valueOf(meta.get("mode"));
    }

    public String guidelines() {
        return meta.get("guidelines");
    }

    public String ownerToken() {
        return meta.get("owner_token");
    }

    /** The system names (ours, baseline): for exports and the owner's page only, never an annotator's. */
    public String ours() {
        return meta.get("ours");
    }

    public String baseline() {
        return meta.getOrDefault("baseline", "");
    }

    String secret() {
        return meta.get("secret");
    }

    /** Opens an existing study file; a missing file or one that is not a study is an error naming it. */
    public static Study open(Path file) {
        if (!Files.isRegularFile(file)) throw new IllegalArgumentException("study " + file + " does not exist (create it with limactl annotate create)");
        try (var in = Files.newInputStream(file)) {
            byte[] head = in.readNBytes(16);
            if (!new String(head, java.nio.charset.StandardCharsets.ISO_8859_1).startsWith("SQLite format 3")) {
                throw new IllegalArgumentException(file + " is not a limactl study (not an SQLite database)");
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        return new Study(file);
    }

    /**
     * Creates a study file from answer files: in pairwise mode the prompts both files answer (first
     * sample of each), in absolute mode every prompt of one file. The file appears whole or not at all
     * (written beside it, then renamed).
     */
    public static Study create(Path file, Spec spec) {
        if (Files.exists(file)) throw new dev.limactl.train.RunStateException(file + " already exists: choose another study file or remove it");
        Items items = items(spec);
        List<String> names = spec.annotators();
        if (names.isEmpty()) throw new IllegalArgumentException("--annotators: name at least one annotator");
        for (String n : names) {
            if (!NAME.matcher(n).matches()) {
                throw new IllegalArgumentException("--annotators: '" + n + "' is not a valid name (letters, digits, '_', '.', '-'; at most 64, starting with a letter or digit)");
            }
        }
        if (names.stream().distinct().count() != names.size()) throw new IllegalArgumentException("--annotators: a name is given twice: " + names);
        if (spec.overlap() < 0) throw new IllegalArgumentException("--overlap must be >= 0, got " + spec.overlap());
        Path dir = file.toAbsolutePath().getParent();
        Path tmp;
        try {
            Files.createDirectories(dir);
            tmp = Files.createTempFile(dir, "." + file.getFileName() + ".", ".tmp");
            Files.delete(tmp);  // SQLite creates it
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write in " + dir + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        try {
            write(tmp, spec, items);
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE);
        } catch (SQLException e) {
            throw new UncheckedIOException("cannot write the study " + file + ": " + e.getMessage(), new IOException(e));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the study " + file + ": " + dev.limactl.data.IoErrors.why(e), e);
        } finally {
            for (String suffix : List.of("", "-wal", "-shm", "-journal")) {
                try {
                    Files.deleteIfExists(Path.of(tmp + suffix));
                } catch (IOException ignored) {
                    // a leftover temporary beside the study is harmless; the study itself is whole or absent
                }
            }
        }
        return new Study(file);
    }

    /** The study's items, (item key, prompt, ours, baseline or null) in the order of our file, and the two systems' names. */
    private record Items(List<String[]> rows, String ours, String baseline) {}

    private static Items items(Spec spec) {
        Responses ours = Responses.read(spec.ours());
        String baseName = null;
        List<String[]> out = new ArrayList<>();
        if (spec.mode() == Mode.PAIRWISE) {
            Responses base = Responses.read(spec.baseline());
            baseName = base.system();
            for (var e : ours.byId().entrySet()) {
                List<Responses.Item> b = base.byId().get(e.getKey());
                if (b == null) continue;
                Responses.Item a = e.getValue().get(0);
                if (!a.prompt().equals(b.get(0).prompt())) {
                    throw new IllegalArgumentException("prompt id " + e.getKey() + " has different prompts in " + spec.ours() + " and " + spec.baseline());
                }
                out.add(new String[] {e.getKey(), a.prompt(), a.response(), b.get(0).response()});
            }
            if (out.isEmpty()) throw new IllegalArgumentException(spec.ours() + " and " + spec.baseline() + " share no prompt ids");
        } else {
            for (var e : ours.byId().entrySet()) {
                Responses.Item a = e.getValue().get(0);
                out.add(new String[] {e.getKey(), a.prompt(), a.response(), null});
            }
            if (out.isEmpty()) throw new IllegalArgumentException(spec.ours() + " holds no responses");
        }
        return new Items(out, ours.system(), baseName);
    }

    private static void write(Path tmp, Spec spec, Items items) throws SQLException {
        SecureRandom tokens = new SecureRandom();
        Random rng = new Random(spec.seed());
        try (Connection c = DriverManager.getConnection("jdbc:sqlite:" + tmp)) {
            try (Statement s = c.createStatement()) {
                s.execute("PRAGMA journal_mode=WAL");
                s.execute("PRAGMA foreign_keys=ON");
                s.execute("CREATE TABLE study(key TEXT PRIMARY KEY, value TEXT NOT NULL)");
                s.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, item TEXT NOT NULL UNIQUE, prompt TEXT NOT NULL, ours TEXT NOT NULL, baseline TEXT)");
                s.execute("CREATE TABLE annotators(name TEXT PRIMARY KEY, token TEXT NOT NULL UNIQUE)");
                s.execute("CREATE TABLE assignments(annotator TEXT NOT NULL REFERENCES annotators(name), item_id INTEGER NOT NULL REFERENCES items(id),"
                        + " position INTEGER NOT NULL, ours_first INTEGER NOT NULL, shared INTEGER NOT NULL,"
                        + " PRIMARY KEY(annotator, item_id), UNIQUE(annotator, position))");
                s.execute("CREATE TABLE answers(annotator TEXT NOT NULL, item_id INTEGER NOT NULL, choice TEXT NOT NULL, seconds REAL, note TEXT,"
                        + " answered_at TEXT NOT NULL, PRIMARY KEY(annotator, item_id),"
                        + " FOREIGN KEY(annotator, item_id) REFERENCES assignments(annotator, item_id))");
            }
            c.setAutoCommit(false);
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put("schema_version", Integer.toString(SCHEMA_VERSION));
            meta.put("mode", spec.mode().name());
            meta.put("ours", items.ours());
            if (items.baseline() != null) meta.put("baseline", items.baseline());
            meta.put("guidelines", spec.guidelines());
            meta.put("seed", Long.toString(spec.seed()));
            meta.put("overlap", Integer.toString(spec.overlap()));
            meta.put("created", Instant.now().toString());
            meta.put("owner_token", token(tokens));
            meta.put("secret", token(tokens));
            try (PreparedStatement p = c.prepareStatement("INSERT INTO study VALUES (?, ?)")) {
                for (var e : meta.entrySet()) {
                    p.setString(1, e.getKey());
                    p.setString(2, e.getValue());
                    p.executeUpdate();
                }
            }
            try (PreparedStatement p = c.prepareStatement("INSERT INTO items(id, item, prompt, ours, baseline) VALUES (?, ?, ?, ?, ?)")) {
                for (int i = 0; i < items.rows().size(); i++) {
                    p.setInt(1, i + 1);
                    for (int k = 0; k < 4; k++) p.setString(k + 2, items.rows().get(i)[k]);
                    p.executeUpdate();
                }
            }
            try (PreparedStatement p = c.prepareStatement("INSERT INTO annotators VALUES (?, ?)")) {
                for (String n : spec.annotators()) {
                    p.setString(1, n);
                    p.setString(2, token(tokens));
                    p.executeUpdate();
                }
            }
            assign(c, items.rows().size(), spec, rng);
            c.commit();
        }
    }

    /**
     * The items every annotator sees (a random sample of {@code overlap}, for agreement), the rest
     * dealt round-robin in a random order; each annotator's queue shuffled, each item's sides drawn.
     */
    private static void assign(Connection c, int n, Spec spec, Random rng) throws SQLException {
        List<Integer> ids = new ArrayList<>();
        for (int i = 1; i <= n; i++) ids.add(i);
        Collections.shuffle(ids, rng);
        int shared = Math.min(spec.overlap(), n);
        List<String> names = spec.annotators();
        Map<String, List<int[]>> queue = new LinkedHashMap<>();
        names.forEach(a -> queue.put(a, new ArrayList<>()));
        for (int i = 0; i < n; i++) {
            if (i < shared) {
                for (String a : names) queue.get(a).add(new int[] {ids.get(i), 1});
            } else {
                queue.get(names.get((i - shared) % names.size())).add(new int[] {ids.get(i), 0});
            }
        }
        try (PreparedStatement p = c.prepareStatement("INSERT INTO assignments VALUES (?, ?, ?, ?, ?)")) {
            for (var e : queue.entrySet()) {
                List<int[]> q = e.getValue();
                Collections.shuffle(q, rng);
                for (int pos = 0; pos < q.size(); pos++) {
                    p.setString(1, e.getKey());
                    p.setInt(2, q.get(pos)[0]);
                    p.setInt(3, pos + 1);
                    p.setInt(4, spec.mode() == Mode.PAIRWISE && rng.nextBoolean() ? 0 : 1);
                    p.setInt(5, q.get(pos)[1]);
                    p.executeUpdate();
                }
            }
        }
    }

    private static String token(SecureRandom r) {
        byte[] b = new byte[18];
        r.nextBytes(b);
        return Base64.getUrlEncoder().withoutPadding().encodeToString(b);
    }

    Connection connect() throws SQLException {
        Connection c = DriverManager.getConnection(url);
        try (Statement s = c.createStatement()) {
            s.execute("PRAGMA busy_timeout=10000");
            s.execute("PRAGMA foreign_keys=ON");
            s.execute("PRAGMA synchronous=FULL");  // an answer the page has moved past survives a power cut too
        }
        return c;
    }

    private Map<String, String> readMeta() {
        Map<String, String> m = new LinkedHashMap<>();
        try (Connection c = connect(); Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT key, value FROM study")) {
            while (r.next()) m.put(r.getString(1), r.getString(2));
        } catch (SQLException e) {
            throw new IllegalArgumentException(file + " is not a limactl study: " + e.getMessage());
        }
        for (String k : List.of("schema_version", "mode", "owner_token", "secret", "guidelines", "ours")) {
            if (!m.containsKey(k)) throw new IllegalArgumentException(file + " is not a limactl study: no '" + k + "' entry");
        }
        if (!m.get("schema_version").equals(Integer.toString(SCHEMA_VERSION))) {
            throw new IllegalArgumentException(file + ": study schema version " + m.get("schema_version") + ", this limactl reads " + SCHEMA_VERSION);
        }
        return m;
    }

    public List<Annotator> annotators() {
        List<Annotator> out = new ArrayList<>();
        query("SELECT name, token FROM annotators ORDER BY rowid", List.of(), r -> out.add(new Annotator(r.getString(1), r.getString(2))));
        return out;
    }

    /** The annotator a token belongs to, or null: compared in constant time against every token. */
    public String annotatorOf(String token) {
        String found = null;
        byte[] t = token == null ? new byte[0] : token.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        for (Annotator a : annotators()) {
            if (java.security.MessageDigest.isEqual(t, a.token().getBytes(java.nio.charset.StandardCharsets.UTF_8))) found = a.name();
        }
        return found;
    }

    public boolean isOwner(String token) {
        return token != null && java.security.MessageDigest.isEqual(token.getBytes(java.nio.charset.StandardCharsets.UTF_8),
                ownerToken().getBytes(java.nio.charset.StandardCharsets.UTF_8));
    }

    /** An annotator's queue in their order, with what they answered so far. */
    public List<Shown> queue(String annotator) {
        List<Shown> out = new ArrayList<>();
        query("SELECT i.id, i.item, a.position, a.ours_first, a.shared, i.prompt, i.ours, i.baseline, x.choice, x.note FROM assignments a"
                + " JOIN items i ON i.id = a.item_id LEFT JOIN answers x ON x.annotator = a.annotator AND x.item_id = a.item_id"
                + " WHERE a.annotator = ? ORDER BY a.position", List.of(annotator), r -> {
                    boolean oursFirst = r.getInt(4) == 1;
                    String ours = r.getString(7), base = r.getString(8);
                    out.add(new Shown(r.getInt(1), r.getString(2), r.getInt(3), oursFirst, r.getInt(5) == 1, r.getString(6),
                            oursFirst ? ours : base, oursFirst ? base : ours, r.getString(9), r.getString(10)));
                });
        return out;
    }

    /**
     * Records (or replaces) an annotator's answer to one of their items, committed when this returns; the
     * item's position in their queue.
     * Everything is checked here, whatever the page sent: the item must be theirs, the choice one of
     * the mode's, the seconds a finite number in [0, 1 day], the note at most 4,000 characters.
     */
    public int answer(String annotator, int itemId, String choice, Double seconds, String note) {
        List<String> allowed = mode() == Mode.PAIRWISE ? PAIRWISE_CHOICES : ABSOLUTE_CHOICES;
        if (choice == null || !allowed.contains(choice)) throw new IllegalArgumentException("choice must be one of " + allowed + ", got " + quote(choice));
        if (seconds != null && !(Double.isFinite(seconds) && seconds >= 0 && seconds <= 86_400)) {
            throw new IllegalArgumentException("seconds must be a number in [0, 86400], got " + seconds);
        }
        if (note != null && note.length() > MAX_NOTE) throw new IllegalArgumentException("note is longer than " + MAX_NOTE + " characters");
        try (Connection c = connect()) {
            int position;
            try (PreparedStatement p = c.prepareStatement("SELECT position FROM assignments WHERE annotator = ? AND item_id = ?")) {
                p.setString(1, annotator);
                p.setInt(2, itemId);
                try (ResultSet r = p.executeQuery()) {
                    if (!r.next()) throw new NotYours("item " + itemId + " is not one of " + annotator + "'s items");
                    position = r.getInt(1);
                }
            }
            try (PreparedStatement p = c.prepareStatement("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(annotator, item_id) DO UPDATE"
                    + " SET choice = excluded.choice, seconds = excluded.seconds, note = excluded.note, answered_at = excluded.answered_at")) {
                p.setString(1, annotator);
                p.setInt(2, itemId);
                p.setString(3, choice);
                if (seconds == null) p.setNull(4, java.sql.Types.REAL);
                else p.setDouble(4, seconds);
                p.setString(5, note == null || note.isBlank() ? null : note);
                p.setString(6, Instant.now().toString());
                p.executeUpdate();
            }
            return position;
        } catch (SQLException e) {
            throw new UncheckedIOException("cannot record the answer in " + file + ": " + e.getMessage(), new IOException(e));
        }
    }

    /** Thrown for an item id that is not the annotator's (forged or another annotator's). */
    public static final class NotYours extends IllegalArgumentException {
        NotYours(String message) {
            super(message);
        }
    }

    /** Every committed answer, by annotator then position. */
    public List<Answer> answers() {
        List<Answer> out = new ArrayList<>();
        boolean pairwise = mode() == Mode.PAIRWISE;
        query("SELECT x.annotator, i.id, i.item, a.ours_first, a.shared, x.choice, x.seconds, x.note, x.answered_at FROM answers x"
                + " JOIN assignments a ON a.annotator = x.annotator AND a.item_id = x.item_id JOIN items i ON i.id = x.item_id"
                + " JOIN annotators n ON n.name = x.annotator ORDER BY n.rowid, a.position", List.of(), r -> {
                    boolean oursFirst = r.getInt(4) == 1;
                    String choice = r.getString(6);
                    double sec = r.getDouble(7);
                    Double seconds = r.wasNull() ? null : sec;
                    out.add(new Answer(r.getString(1), r.getInt(2), r.getString(3), oursFirst, r.getInt(5) == 1, choice,
                            pairwise ? label(choice, oursFirst) : choice, seconds, r.getString(8), r.getString(9)));
                });
        return out;
    }

    /** What a pairwise choice means for our model: the side it was shown on decides win or loss. */
    static String label(String choice, boolean oursFirst) {
        return switch (choice) {
            case "A" -> oursFirst ? "win" : "loss";
            case "B" -> oursFirst ? "loss" : "win";
            default -> "tie";
        };
    }

    public int itemCount() {
        int[] n = {0};
        query("SELECT COUNT(*) FROM items", List.of(), r -> n[0] = r.getInt(1));
        return n[0];
    }

    private interface Row {
        void accept(ResultSet r) throws SQLException;
    }

    private void query(String sql, List<String> args, Row row) {
        try (Connection c = connect(); PreparedStatement p = c.prepareStatement(sql)) {
            for (int i = 0; i < args.size(); i++) p.setString(i + 1, args.get(i));
            try (ResultSet r = p.executeQuery()) {
                while (r.next()) row.accept(r);
            }
        } catch (SQLException e) {
            throw new UncheckedIOException("cannot read the study " + file + ": " + e.getMessage(), new IOException(e));
        }
    }

    private static String quote(String s) {
        return s == null ? "nothing" : "'" + (s.length() > 40 ? s.substring(0, 40) + "..." : s) + "'";
    }
}
