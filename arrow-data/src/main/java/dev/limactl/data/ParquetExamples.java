package dev.limactl.data;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

/**
 * Parquet example files, in and out, through DuckDB (org.duckdb:duckdb_jdbc, an optional dependency:
 * without it a Parquet file is refused saying what to add). Reading turns each row into a JSON object
 * with DuckDB's own {@code to_json} and parses it as any JSON Lines row (LIMA, ShareGPT, OpenAI
 * messages, Alpaca columns); writing goes through chat JSON Lines (id, messages of role and content,
 * and the example's other fields) that DuckDB copies into Parquet, beside the target, then renamed.
 * DuckDB runs in memory in this process, with extension downloads off.
 */
public final class ParquetExamples {
    private static final ObjectMapper JSON = new ObjectMapper();

    private ParquetExamples() {}

    public static boolean isParquet(Path path) {
        return path.getFileName().toString().endsWith(".parquet");
    }

    public static List<Example> read(Path path, String defaultSplit) {
        if (!Files.exists(path)) throw new DataFormatException("data file " + path + " does not exist");
        List<JsonNode> rows = new ArrayList<>();
        try (Connection c = connect(); Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT to_json(t)::VARCHAR FROM read_parquet(" + literal(path) + ") t")) {
            while (r.next()) rows.add(JSON.readTree(r.getString(1)));
        } catch (SQLException e) {
            throw new DataFormatException(path + ": not a readable Parquet file: " + firstLine(e.getMessage()), e);
        } catch (IOException e) {
            throw new DataFormatException(path + ": a row did not convert to JSON: " + e.getMessage(), e);
        }
        return ForeignExamples.rows(path, rows.iterator(), "row ", defaultSplit);
    }

    /** Writes the examples as a Parquet table of chat rows (JsonlExamples' chat format); the file appears whole or not at all. */
    public static void write(Path path, List<Example> examples) {
        AtomicFiles.checkWritable(path);
        Path dir = path.toAbsolutePath().getParent();
        Path jsonl = dir.resolve("." + path.getFileName() + ".tmp.jsonl"), tmp = dir.resolve("." + path.getFileName() + ".tmp");
        try {
            JsonlExamples.write(jsonl, examples, true);
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("COPY (SELECT * FROM read_json(" + literal(jsonl) + ", format='newline_delimited')) TO " + literal(tmp)
                        + " (FORMAT PARQUET)");
            }
            Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (SQLException e) {
            throw new UncheckedIOException(new IOException("cannot write " + path + ": " + firstLine(e.getMessage()), e));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + path + ": " + IoErrors.why(e), e);
        } finally {
            try {
                Files.deleteIfExists(jsonl);
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // temporaries beside the output; the output itself is whole or absent
            }
        }
    }

    private static Connection connect() throws SQLException {
        try {
            Class.forName("org.duckdb.DuckDBDriver");
        } catch (ClassNotFoundException e) {
            throw new DataFormatException("Parquet files need DuckDB's JDBC driver (org.duckdb:duckdb_jdbc) on the class path; the limactl"
                    + " CLI has it, an embedding service adds the dependency (or converts the file to .jsonl or .arrow)", e);
        }
        Connection c = DriverManager.getConnection("jdbc:duckdb:");
        try (Statement s = c.createStatement()) {
            s.execute("SET autoinstall_known_extensions = false");  // nothing is fetched from the network
        }
        return c;
    }

    /** A path as a SQL string literal (DuckDB's table functions take their file names as constants). */
    private static String literal(Path p) {
        return "'" + p.toAbsolutePath().toString().replace("'", "''") + "'";
    }

    private static String firstLine(String s) {
        return s == null ? "" : s.lines().findFirst().orElse("").strip();
    }
}
