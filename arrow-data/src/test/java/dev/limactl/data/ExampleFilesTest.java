package dev.limactl.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ExampleFilesTest {
    @TempDir Path dir;

    private static List<Example> sample(int n) {
        List<Example> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            if (i % 3 == 2) {  // multi-turn
                out.add(new Example("ex-" + i, "manual", "train", List.of(new Turn(Turn.USER, "Hi " + i),
                        new Turn(Turn.ASSISTANT, "Hello! ✓ 你好\nline two"), new Turn(Turn.USER, "and?"),
                        new Turn(Turn.ASSISTANT, "```code```")), Map.of()));
            } else {
                out.add(Example.of("ex-" + i, "stackexchange", i % 2 == 0 ? "train" : "dev", "Q" + i, "A \"quoted\" " + i,
                        Map.of("exchange", "coffee", "score", Integer.toString(i), "url", "https://x/" + i)));
            }
        }
        return out;
    }

    @Test
    void arrowRoundTripIsLosslessAcrossRecordBatches() {
        List<Example> in = sample(2500);  // three record batches
        Path p = dir.resolve("train.arrow");
        ArrowExamples.write(p, in);
        assertEquals(in, ArrowExamples.read(p));
        assertEquals(in, ExampleFiles.read(p, "train"));
        assertTrue(Files.notExists(dir.resolve("train.arrow.tmp")));
    }

    /** ShareGPT, OpenAI messages with a system turn, Alpaca as JSONL and as a JSON array; chat JSONL out and back. */
    @Test
    void readsTheFormatsUsersHaveWithOneSystemRule() throws Exception {
        Path share = dir.resolve("sharegpt.jsonl");
        Files.writeString(share, "{\"id\": \"s1\", \"conversations\": [{\"from\": \"system\", \"value\": \"Be brief.\"},"
                + " {\"from\": \"human\", \"value\": \"Hi\"}, {\"from\": \"gpt\", \"value\": \"Hello!\"},"
                + " {\"from\": \"human\", \"value\": \"Why?\"}, {\"from\": \"gpt\", \"value\": \"Because.\"}]}\n");
        Example s = ExampleFiles.read(share, "train").get(0);
        assertEquals(List.of(new Turn(Turn.USER, "Be brief.\n\nHi"), new Turn(Turn.ASSISTANT, "Hello!"), new Turn(Turn.USER, "Why?"),
                new Turn(Turn.ASSISTANT, "Because.")), s.turns());
        assertEquals("s1", s.id());
        Path bom = dir.resolve("bom.jsonl");  // a leading byte-order mark, as Windows editors write, is not part of the JSON
        Files.write(bom, ("\uFEFF{\"conversations\": [\"Hi\", \"Hello!\"]}\n").getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals(List.of(new Turn(Turn.USER, "Hi"), new Turn(Turn.ASSISTANT, "Hello!")), ExampleFiles.read(bom, "train").get(0).turns());
        Path roles = dir.resolve("conversations-roles.jsonl");  // conversations of {role, content}, as some exports write
        Files.writeString(roles, "{\"conversations\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n"
                + "{\"conversations\": [{\"role\": \"user\", \"text\": \"Hi\"}]}\n");
        DataFormatException bad = assertThrows(DataFormatException.class, () -> ExampleFiles.read(roles, "train"));
        assertTrue(bad.getMessage().contains("conversations-roles.jsonl:2: conversations[0] needs string \"from\" and \"value\" (ShareGPT)"
                + " or \"role\" and \"content\""), bad.getMessage());
        Files.writeString(roles, "{\"conversations\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n");
        assertEquals(List.of(new Turn(Turn.USER, "Hi"), new Turn(Turn.ASSISTANT, "Hello!")), ExampleFiles.read(roles, "train").get(0).turns());
        Path openai = dir.resolve("openai.jsonl");
        Files.writeString(openai, "{\"messages\": [{\"role\": \"system\", \"content\": \"A.\"}, {\"role\": \"developer\", \"content\": \"B.\"},"
                + " {\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"R\"}, {\"role\": \"system\", \"content\": \"late\"}]}\n");
        assertEquals(List.of(new Turn(Turn.USER, "A.\n\nB.\n\nQ"), new Turn(Turn.ASSISTANT, "R")), ExampleFiles.read(openai, "train").get(0).turns(),
                "system messages before the next user message; one with none after it is dropped");
        Path alpaca = dir.resolve("alpaca.json");
        Files.writeString(alpaca, "[{\"instruction\": \"Translate.\", \"input\": \"Bonjour\", \"output\": \"Hello\"},"
                + " {\"instruction\": \"Say hi.\", \"input\": \"\", \"output\": \"Hi\"}]");
        List<Example> a = ExampleFiles.read(alpaca, "train");
        assertEquals(List.of(new Turn(Turn.USER, "Translate.\n\nBonjour"), new Turn(Turn.ASSISTANT, "Hello")), a.get(0).turns());
        assertEquals(List.of(new Turn(Turn.USER, "Say hi."), new Turn(Turn.ASSISTANT, "Hi")), a.get(1).turns());
        assertEquals("alpaca-2", a.get(1).id());
        Path alpacaL = dir.resolve("alpaca.jsonl");
        Files.writeString(alpacaL, "{\"instruction\": \"Say hi.\", \"output\": \"Hi\"}\n");
        assertEquals(a.get(1).turns(), ExampleFiles.read(alpacaL, "train").get(0).turns());
        // chat JSONL out, and back, losslessly
        List<Example> in = sample(7);
        Path chat = dir.resolve("chat.jsonl");
        JsonlExamples.write(chat, in, true);
        assertTrue(Files.readString(chat).contains("\"messages\":[{\"role\":\"user\""));
        assertEquals(in, ExampleFiles.read(chat, "train"));
        // errors name the place
        Files.writeString(share, "{\"conversations\": [{\"from\": \"robot\", \"value\": \"x\"}]}\n");
        DataFormatException e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(share, "train"));
        assertTrue(e.getMessage().contains("sharegpt.jsonl:1: conversations[0].from is \"robot\""), e.getMessage());
        Files.writeString(alpaca, "[{\"instruction\": 3, \"output\": \"x\"}]");
        e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(alpaca, "train"));
        assertTrue(e.getMessage().contains("alpaca.json: element 0: \"instruction\" must be a string"), e.getMessage());
        Files.writeString(alpaca, "{\"instruction\": \"x\"}");
        e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(alpaca, "train"));
        assertTrue(e.getMessage().contains("expected a JSON array"), e.getMessage());
    }

    /** An Arrow table that is not limactl's (an IPC stream with a messages column, as Hugging Face datasets writes) is read by its columns. */
    @Test
    void readsForeignArrowTablesByTheirColumns() throws Exception {
        Path p = dir.resolve("data-00000-of-00001.arrow");
        var roleF = new org.apache.arrow.vector.types.pojo.Field("role", org.apache.arrow.vector.types.pojo.FieldType.nullable(
                org.apache.arrow.vector.types.pojo.ArrowType.Utf8.INSTANCE), null);
        var contentF = new org.apache.arrow.vector.types.pojo.Field("content", org.apache.arrow.vector.types.pojo.FieldType.nullable(
                org.apache.arrow.vector.types.pojo.ArrowType.Utf8.INSTANCE), null);
        var structF = new org.apache.arrow.vector.types.pojo.Field("item", org.apache.arrow.vector.types.pojo.FieldType.nullable(
                org.apache.arrow.vector.types.pojo.ArrowType.Struct.INSTANCE), List.of(roleF, contentF));
        var listF = new org.apache.arrow.vector.types.pojo.Field("messages", org.apache.arrow.vector.types.pojo.FieldType.nullable(
                org.apache.arrow.vector.types.pojo.ArrowType.List.INSTANCE), List.of(structF));
        var schema = new org.apache.arrow.vector.types.pojo.Schema(List.of(listF));
        try (var alloc = new org.apache.arrow.memory.RootAllocator();
             var root = org.apache.arrow.vector.VectorSchemaRoot.create(schema, alloc);
             var out = Files.newOutputStream(p);
             var w = new org.apache.arrow.vector.ipc.ArrowStreamWriter(root, null, out)) {
            var list = (org.apache.arrow.vector.complex.ListVector) root.getVector("messages");
            var writer = list.getWriter();
            String[][] rows = {{"system", "S.", "user", "Q1", "assistant", "A1"}, {"user", "Q2", "assistant", "A2 ✓"}};
            for (int r = 0; r < rows.length; r++) {
                writer.setPosition(r);
                writer.startList();
                for (int k = 0; k < rows[r].length; k += 2) {
                    var st = writer.struct();
                    st.start();
                    for (int f = 0; f < 2; f++) {
                        byte[] b = rows[r][k + f].getBytes(java.nio.charset.StandardCharsets.UTF_8);
                        try (var buf = alloc.buffer(b.length)) {
                            buf.setBytes(0, b);
                            st.varChar(f == 0 ? "role" : "content").writeVarChar(0, b.length, buf);
                        }
                    }
                    st.end();
                }
                writer.endList();
            }
            list.setValueCount(rows.length);
            root.setRowCount(rows.length);
            w.start();
            w.writeBatch();
            w.end();
        }
        List<Example> ex = ExampleFiles.read(p, "train");
        assertEquals(2, ex.size());
        assertEquals(List.of(new Turn(Turn.USER, "S.\n\nQ1"), new Turn(Turn.ASSISTANT, "A1")), ex.get(0).turns());
        assertEquals("A2 ✓", ex.get(1).turns().get(1).text());
        // a Hugging Face save_to_disk folder: state.json naming the file
        Files.writeString(dir.resolve("state.json"), "{\"_data_files\": [{\"filename\": \"data-00000-of-00001.arrow\"}]}");
        assertEquals(ex, ExampleFiles.read(dir, "train"));
    }

    @Test
    void emptyArrowFileRoundTrips() {
        Path p = dir.resolve("empty.arrow");
        ArrowExamples.write(p, List.of());
        assertEquals(List.of(), ArrowExamples.read(p));
    }

    @Test
    void limaJsonlRoundTripIsLossless() {
        List<Example> in = sample(10);
        Path p = dir.resolve("x.jsonl");
        JsonlExamples.write(p, in);
        assertEquals(in, JsonlExamples.read(p, "train"));
    }

    @Test
    void readsThePublicLimaAndChatForms() throws Exception {
        Path lima = dir.resolve("lima.jsonl");
        Files.writeString(lima, "{\"conversations\": [\"What is 2+2?\", \"4.\"], \"source\": \"manual\"}\n\n"
                + "{\"conversations\": [\"a\", \"b\", \"c\", \"d\"], \"source\": \"multi_turn\"}\n");
        List<Example> l = JsonlExamples.read(lima, "train");
        assertEquals(2, l.size());
        assertEquals("lima-1", l.get(0).id());
        assertEquals("4.", l.get(0).turns().get(1).text());
        assertEquals(4, l.get(1).turns().size());
        Path chat = dir.resolve("chat.jsonl");
        Files.writeString(chat, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n");
        assertEquals("yo", JsonlExamples.read(chat, "dev").get(0).turns().get(1).text());
    }

    @Test
    void malformedJsonlNamesFileAndLine() throws Exception {
        Path p = dir.resolve("bad.jsonl");
        Files.writeString(p, "{\"conversations\": [\"a\", \"b\"]}\n{\"conversations\": [\"a\", \n");
        DataFormatException e = assertThrows(DataFormatException.class, () -> JsonlExamples.read(p, "train"));
        assertTrue(e.getMessage().startsWith(p + ":2: not valid JSON: "), e.getMessage());
        assertTrue(!e.getMessage().contains("[Source") && !e.getMessage().contains("REDACTED"), e.getMessage());
        Files.writeString(p, "{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}\n");
        e = assertThrows(DataFormatException.class, () -> JsonlExamples.read(p, "train"));
        assertTrue(e.getMessage().contains(":1: no user or assistant message"), e.getMessage());
        Files.writeString(p, "{\"text\": \"x\"}\n");
        e = assertThrows(DataFormatException.class, () -> JsonlExamples.read(p, "train"));
        assertTrue(e.getMessage().contains("expected \"conversations\""), e.getMessage());
    }

    @Test
    void invalidUtf8NamesTheLineAndByteAndCrlfStillReads() throws Exception {
        Path p = dir.resolve("latin1.jsonl");
        StringBuilder ok = new StringBuilder();
        for (int i = 0; i < 300; i++) ok.append("{\"conversations\": [\"caf\u00e9 ").append(i).append("\", \"b\"]}\r\n");
        java.io.ByteArrayOutputStream file = new java.io.ByteArrayOutputStream();
        file.writeBytes(ok.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        file.writeBytes("{\"conversations\": [\"caf\u00e9\", \"b\"]}\n".getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        Files.write(p, file.toByteArray());
        DataFormatException e = assertThrows(DataFormatException.class, () -> JsonlExamples.read(p, "train"));
        assertEquals(p + ":301: not valid UTF-8 at byte 24 of the line", e.getMessage());
        Files.write(p, ok.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        List<Example> read = JsonlExamples.read(p, "train");
        assertEquals(300, read.size());
        assertEquals("caf\u00e9 299", read.get(299).turns().get(0).text());
    }

    @Test
    void missingOrForeignFilesAreClearErrors() throws Exception {
        DataFormatException e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(dir.resolve("no.arrow"), "train"));
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
        Path junk = dir.resolve("junk.arrow");
        Files.writeString(junk, "not arrow at all");
        e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(junk, "train"));
        assertTrue(e.getMessage().startsWith(junk + ": not a readable Arrow table"), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> ExampleFiles.read(dir.resolve("x.csv"), "train"));
        assertTrue(e.getMessage().contains("unknown data file type"), e.getMessage());
    }

    @Test
    void turnsMustAlternateStartingWithTheUser() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new Example("x", "s", "train", List.of(new Turn(Turn.ASSISTANT, "a")), Map.of()));
        assertTrue(e.getMessage().contains("turn 0 is \"assistant\""), e.getMessage());
    }

    /** Reads an Arrow file in a JVM started without Arrow's --add-opens and prints what happens. */
    public static void main(String[] args) {
        try {
            ArrowExamples.read(Path.of(args[0]));
            System.out.println("read");
        } catch (RuntimeException e) {
            System.out.println(e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    @Test
    void withoutArrowsAddOpensTheErrorNamesTheFlagNotTheFile() throws Exception {
        Path p = dir.resolve("ok.arrow");
        ArrowExamples.write(p, sample(3));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process proc = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), ExampleFilesTest.class.getName(),
                p.toString()).redirectErrorStream(true).start();
        String out = new String(proc.getInputStream().readAllBytes());
        assertEquals(0, proc.waitFor(), out);
        assertTrue(out.contains("--add-opens=java.base/java.nio=ALL-UNNAMED") && !out.contains("not a readable"), out);
    }
}
