package dev.limactl.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.Statement;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Parquet example files through DuckDB: a round trip, the foreign row formats, and bad files. */
class ParquetExamplesTest {
    @TempDir
    Path dir;

    @Test
    void examplesRoundTripThroughParquet() throws Exception {
        List<Example> in = List.of(
                new Example("m-1", "manual", "train", List.of(new Turn(Turn.USER, "Hi ü"), new Turn(Turn.ASSISTANT, "Hello! ✓ 你好\nline two"),
                        new Turn(Turn.USER, "and?"), new Turn(Turn.ASSISTANT, "```code```")), Map.of()),
                Example.of("se-2", "stackexchange", "dev", "Q \"quoted\"", "A 'single'", Map.of("exchange", "coffee", "score", "7")));
        Path p = dir.resolve("it's.parquet");  // a quote in the name reaches DuckDB as a literal
        ParquetExamples.write(p, in);
        assertTrue(Files.exists(p));
        try (var files = Files.list(dir)) {
            assertEquals(1, files.count(), "no temporaries left");
        }
        List<Example> out = ExampleFiles.read(p, "train");
        assertEquals(2, out.size());
        for (int i = 0; i < 2; i++) {
            assertEquals(in.get(i).id(), out.get(i).id());
            assertEquals(in.get(i).turns(), out.get(i).turns());
        }
    }

    /** Parquet tables in the shapes datasets come in: OpenAI messages (with a system turn), ShareGPT, Alpaca. */
    @Test
    void foreignRowFormatsAreReadByTheirColumns() throws Exception {
        Path json = dir.resolve("rows.jsonl");
        Files.writeString(json, "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"},"
                + " {\"role\": \"assistant\", \"content\": \"Hello\"}]}\n");
        Path openai = dir.resolve("openai.parquet"), sharegpt = dir.resolve("sharegpt.parquet"), alpaca = dir.resolve("alpaca.parquet");
        try (Connection c = DriverManager.getConnection("jdbc:duckdb:"); Statement s = c.createStatement()) {
            s.execute("COPY (SELECT * FROM read_json('" + json + "', format='newline_delimited')) TO '" + openai + "' (FORMAT PARQUET)");
            s.execute("COPY (SELECT [{'from': 'human', 'value': 'Q?'}, {'from': 'gpt', 'value': 'A.'}] AS conversations) TO '" + sharegpt
                    + "' (FORMAT PARQUET)");
            s.execute("COPY (SELECT 'Add' AS instruction, '2 and 3' AS input, '5' AS output UNION ALL SELECT 'Say hi', '', 'hi') TO '"
                    + alpaca + "' (FORMAT PARQUET)");
        }
        List<Example> o = ExampleFiles.read(openai, "train");
        assertEquals(List.of(new Turn(Turn.USER, "Be brief.\n\nHi"), new Turn(Turn.ASSISTANT, "Hello")), o.get(0).turns());
        assertEquals("openai-1", o.get(0).id());
        assertEquals(List.of(new Turn(Turn.USER, "Q?"), new Turn(Turn.ASSISTANT, "A.")), ExampleFiles.read(sharegpt, "train").get(0).turns());
        List<Example> a = ExampleFiles.read(alpaca, "dev");
        assertEquals(2, a.size());
        assertEquals("dev", a.get(1).split());
        assertEquals("hi", a.get(1).turns().get(1).text());
    }

    @Test
    void badParquetFilesAreClearErrors() throws Exception {
        Path junk = dir.resolve("junk.parquet");
        Files.writeString(junk, "not parquet at all");
        DataFormatException e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(junk, "train"));
        assertTrue(e.getMessage().startsWith(junk + ": not a readable Parquet file"), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(dir.resolve("none.parquet"), "train"));
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
        Path wrong = dir.resolve("wrong.parquet");
        try (Connection c = DriverManager.getConnection("jdbc:duckdb:"); Statement s = c.createStatement()) {
            s.execute("COPY (SELECT 1 AS x) TO '" + wrong + "' (FORMAT PARQUET)");
        }
        e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(wrong, "train"));
        assertTrue(e.getMessage().startsWith(wrong + ": row 0: "), e.getMessage());
        // an output whose directory is missing, or that is a directory: named, not its temporary
        List<Example> one = List.of(Example.of("a", "manual", "train", "Q", "A", Map.of()));
        Path nodir = dir.resolve("missing/out.parquet");
        java.io.UncheckedIOException w = assertThrows(java.io.UncheckedIOException.class, () -> ParquetExamples.write(nodir, one));
        assertEquals("cannot write " + nodir + ": its directory " + nodir.getParent() + " does not exist", w.getMessage());
        Path isDir = Files.createDirectories(dir.resolve("d.parquet"));
        w = assertThrows(java.io.UncheckedIOException.class, () -> ParquetExamples.write(isDir, one));
        assertEquals("cannot write " + isDir + ": it is a directory", w.getMessage());
    }
}
