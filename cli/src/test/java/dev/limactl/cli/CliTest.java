package dev.limactl.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** limactl run in-process: outputs and exit codes. */
class CliTest {
    static final String LLAMA_TOK = "../../shared/data/tokenizers/llama/tokenizer.model";
    @TempDir Path dir;

    record Run(int code, String out, String err) {}

    static Run limactl(String... args) {
        StringWriter out = new StringWriter(), err = new StringWriter();
        int code = Main.run(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(code, out.toString(), err.toString());
    }

    static final String[] SMALL = {"--set", "model.architecture.hidden_size=32", "--set", "model.architecture.intermediate_size=64",
            "--set", "model.architecture.num_layers=2", "--set", "data.max_tokens=128", "--set", "training.epochs=2",
            "--set", "training.batch_size=32"};

    /** 16 examples whose answer is "Yes.": a model trained on them learns to answer and then stop (EOT). */
    static Path yesData(Path dir) throws java.io.IOException {
        Path data = dir.resolve("yes.jsonl");
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 16; i++) sb.append("{\"id\": \"e").append(i).append("\", \"conversations\": [\"Question number ").append(i)
                .append(": say yes?\", \"Yes.\"]}\n");
        Files.writeString(data, sb.toString());
        return data;
    }

    /** Skips the calling test, saying why, where python3 cannot import these modules (ci/setup.sh installs them for CI). */
    static void assumePython(String modules, String skipped) throws Exception {
        Process probe = new ProcessBuilder("python3", "-c", "import " + modules).redirectErrorStream(true).start();
        boolean ok = probe.waitFor(120, java.util.concurrent.TimeUnit.SECONDS) && probe.exitValue() == 0;
        org.junit.jupiter.api.Assumptions.assumeTrue(ok, "python3 with " + modules + " is not installed: " + skipped);
    }

    /** Runs a Python script, which must succeed within 5 minutes; its output (the failure message shows it whole). */
    static String python(String... args) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of("python3"));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(p.waitFor(300, java.util.concurrent.TimeUnit.SECONDS) && p.exitValue() == 0, String.join(" ", args) + ": " + out);
        return out;
    }

    /** The last line of a script's output, as JSON. */
    static JsonNode pythonJson(String... args) throws Exception {
        return new ObjectMapper().readTree(python(args).lines().reduce((a, b) -> b).orElseThrow());
    }

    static String[] concat(String[] a, String... b) {
        String[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    @Test
    void versionAndDoctorReportTheNativeLibrary() {
        Run v = limactl("version");
        assertEquals(0, v.code(), v.err());
        assertTrue(v.out().contains("liblima 0.1.0"), v.out());
        Run d = limactl("doctor");
        assertEquals(0, d.code(), d.err());
        assertTrue(d.out().contains("cpu:       backend ok"), d.out());
        assertTrue(d.out().contains("cuda:      "), d.out());  // devices, or which of plugin, driver, device is missing
        if (dev.limactl.engine.CudaPlugins.select().driverVersion() == 0)  // not a missing plugin: the jar may carry one
            assertTrue(d.out().contains("cuda:      unavailable: no usable NVIDIA driver on this machine"), d.out());
        assertTrue(d.out().contains("ranks:     gloo ok") && d.out().contains("redis-server found"), d.out());  // ci/setup.sh installs both
    }

    @Test
    void tokenizeGivesIdsAndPiecesAsJson() throws Exception {
        Run r = limactl("tokenize", "--json", "-t", LLAMA_TOK, "Hello world");
        assertEquals(0, r.code(), r.err());
        JsonNode j = new ObjectMapper().readTree(r.out());
        assertEquals("[15043,3186]", j.get("ids").toString());
        assertEquals("[\"▁Hello\",\"▁world\"]", j.get("pieces").toString());
        Run bad = limactl("tokenize", "-t", dir.resolve("none.model").toString(), "x");
        assertEquals(ExitCodes.INVALID_INPUT, bad.code());
        assertTrue(bad.err().contains("none.model does not exist"), bad.err());
    }

    @Test
    void demoTrainsAndPerplexityScoresItsCheckpoint() throws Exception {
        Path run = dir.resolve("demo");
        Run r = limactl(concat(new String[] {"-q", "demo", "--run", run.toString()}, SMALL));
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("limactl demo: summary"), r.out());
        assertTrue(r.out().contains("epoch  2  mean train loss"), r.out());
        Path ck = run.resolve("checkpoints/epoch-02");
        Run p = limactl("perplexity", "--json", "-m", ck.toString(), "-d", run.resolve("embedded/demo/dev.jsonl").toString());
        assertEquals(0, p.code(), p.err());
        JsonNode j = new ObjectMapper().readTree(p.out());
        assertEquals(6, j.get("examples").asInt());
        assertTrue(j.get("perplexity").asDouble() > 1 && j.get("perplexity").asDouble() < 1025, p.out());
        // nothing to score is an input error, not NaN; --max-tokens beyond the model's context is refused
        Path empty = dir.resolve("prompts-only.jsonl");
        Files.writeString(empty, "{\"conversations\": [\"Just a question?\"]}\n");
        Run stats = limactl("data", "stats", empty.toString());
        assertEquals(ExitCodes.INVALID_INPUT, stats.code(), stats.err());
        assertTrue(stats.err().contains(empty + ": example 1") && stats.err().contains("has only a prompt"), stats.err());
        Run none = limactl("perplexity", "-m", ck.toString(), "-d", empty.toString());
        assertEquals(ExitCodes.INVALID_INPUT, none.code(), none.out() + none.err());
        assertTrue(!none.out().contains("NaN"), none.out());
        Run tooLong = limactl("perplexity", "-m", ck.toString(), "-d", run.resolve("embedded/demo/dev.jsonl").toString(), "--max-tokens", "100000000");
        assertEquals(ExitCodes.INVALID_INPUT, tooLong.code(), tooLong.err());
        assertTrue(tooLong.err().contains("the model's context"), tooLong.err());
    }

    @Test
    void trainFromACheckpointAndResumeRules() throws Exception {
        Path first = dir.resolve("first");
        assertEquals(0, limactl(concat(new String[] {"-q", "demo", "--run", first.toString()}, SMALL)).code());
        // Fine-tune the demo checkpoint further, as from any pretrained HF directory.
        Path ck = first.resolve("checkpoints/epoch-02");
        Path run = dir.resolve("ft");
        Run t = limactl("-q", "train", "--run", run.toString(), "--preset", "lima-7b", "--model", ck.toString(), "--data",
                first.resolve("embedded/demo/train.jsonl").toString(), "--epochs", "1", "--set", "data.max_tokens=128");
        assertEquals(0, t.code(), t.err());
        assertTrue(Files.exists(run.resolve("checkpoints/epoch-01/model.safetensors")));
        JsonNode meta = new ObjectMapper().readTree(run.resolve("checkpoints/epoch-01/limactl.json").toFile());
        assertEquals(1024, meta.get("eot_token_id").asInt());  // kept from the checkpoint, not added twice
        Run again = limactl("train", "--run", run.toString(), "--model", ck.toString(), "--data", "x.jsonl");
        assertEquals(ExitCodes.UNEXPECTED_STATE, again.code());
        assertTrue(again.err().contains("already holds a run"), again.err());
        Run nothing = limactl("train", "--resume", "--run", dir.resolve("none").toString());
        assertEquals(ExitCodes.UNEXPECTED_STATE, nothing.code());
    }

    @Test
    void curateThenInspectAndConvertTheData() throws Exception {
        Path out = dir.resolve("curated");
        Run c = limactl("-q", "curate", "--preset", "shared-sample", "--root", "../../shared/data", "--out", out.toString(),
                "--tokenizer", LLAMA_TOK);
        assertEquals(0, c.code(), c.err());
        assertTrue(c.out().contains("train") && c.out().contains("rejected"), c.out());
        JsonNode m = new ObjectMapper().readTree(out.resolve("manifest.json").toFile());
        assertTrue(m.at("/splits/train/sources/stackexchange/response_tokens_mean").asDouble() > 0, m.toString());
        Run stats = limactl("data", "stats", out.resolve("dev.arrow").toString());
        assertEquals(0, stats.code(), stats.err());
        assertEquals(6, new ObjectMapper().readTree(stats.out()).get("count").asInt());
        Run show = limactl("data", "show", out.resolve("train.arrow").toString(), "-t", LLAMA_TOK, "--index", "2");
        assertEquals(0, show.code(), show.err());
        assertTrue(show.out().startsWith("=== ") && show.out().contains("⟨BOS⟩") && show.out().contains("⟨EOT⟩[["), show.out());
        Path jsonl = dir.resolve("train.jsonl"), back = dir.resolve("back.arrow");
        assertEquals(0, limactl("data", "export", out.resolve("train.arrow").toString(), jsonl.toString()).code());
        assertEquals(0, limactl("data", "import", jsonl.toString(), back.toString()).code());
        assertEquals(dev.limactl.data.ArrowExamples.read(out.resolve("train.arrow")), dev.limactl.data.ArrowExamples.read(back));
        Run bad = limactl("curate", "--recipe", dir.resolve("none.yaml").toString(), "--out", out.toString());
        assertEquals(ExitCodes.INVALID_INPUT, bad.code());
        assertTrue(bad.err().contains("none.yaml does not exist"), bad.err());
        Run idx = limactl("data", "show", out.resolve("dev.arrow").toString(), "-t", LLAMA_TOK, "--index", "99");
        assertEquals(ExitCodes.INVALID_INPUT, idx.code());
    }

    /**
     * chat on a terminal (JLine over an xterm-type terminal fed through a pipe): the up arrow recalls the
     * last line (kept in the history file), Ctrl-C while an answer is written stops it and the
     * conversation goes on, --system goes before the first user message.
     */
    void chatOnATerminalEditsRecallsAndStops(Path ck) throws Exception {
        java.io.PipedOutputStream keys = new java.io.PipedOutputStream();
        java.io.PipedInputStream in = new java.io.PipedInputStream(keys, 1 << 16);
        java.io.ByteArrayOutputStream screen = new java.io.ByteArrayOutputStream();
        ChatCommand chat = new ChatCommand();
        new picocli.CommandLine(chat).parseArgs("-m", ck.toString(), "--max-new-tokens", "64", "--system", "Be brief.");
        Path historyFile = dir.resolve("chat-history");
        List<String> userTurns = java.util.Collections.synchronizedList(new java.util.ArrayList<>());
        boolean[] raised = {false};
        try (org.jline.terminal.Terminal t = org.jline.terminal.TerminalBuilder.builder().system(false).streams(in, screen).type("xterm")
                .encoding(java.nio.charset.StandardCharsets.UTF_8).build();
             dev.limactl.generate.ModelDir md = new dev.limactl.generate.ModelDir(ck, null, 2048)) {
            ChatCommand.Console c = ChatCommand.jline(t, historyFile);
            ChatCommand.Console console = new ChatCommand.Console() {  // presses Ctrl-C once, as the first answer starts
                boolean answering;

                @Override
                public String readLine(String prompt) throws java.io.IOException {
                    answering = false;
                    return c.readLine(prompt);
                }

                @Override
                public void print(String text) {
                    c.print(text);
                    if (text.equals("lima> ")) answering = true;
                    else if (answering && !raised[0]) {
                        raised[0] = true;
                        t.raise(org.jline.terminal.Terminal.Signal.INT);
                    }
                }

                @Override
                public void onInterrupt(Runnable cancel) {
                    c.onInterrupt(cancel);
                }
            };
            java.util.concurrent.Future<Integer> done = java.util.concurrent.Executors.newSingleThreadExecutor()
                    .submit(() -> chat.loop(md.answerer, console));
            keys.write("How do I grind?\r".getBytes(java.nio.charset.StandardCharsets.UTF_8));
            keys.write("\u001bOA\r".getBytes(java.nio.charset.StandardCharsets.UTF_8));  // up arrow (xterm keypad mode): the last line again
            keys.write("/exit\r".getBytes(java.nio.charset.StandardCharsets.UTF_8));
            keys.flush();
            assertEquals(0, done.get(120, java.util.concurrent.TimeUnit.SECONDS));
            for (dev.limactl.data.Turn turn : chat.conversation) if (turn.role().equals(dev.limactl.data.Turn.USER)) userTurns.add(turn.text());
            assertEquals(4, chat.conversation.size(), "the stopped answer stays in the conversation: " + chat.conversation);
        }
        String shown = screen.toString(java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(raised[0], "no answer text to interrupt: " + shown);
        assertTrue(shown.contains("(stopped)"), "Ctrl-C did not stop the answer: " + shown);
        assertEquals(List.of("Be brief.\n\nHow do I grind?", "How do I grind?"), userTurns, "the recalled line, and the system message first");
        assertTrue(Files.readString(historyFile).contains("How do I grind?"), "the history file lacks the line");
    }

    /** data import reads a Hugging Face datasets folder written by datasets itself (chat messages with a system turn, Alpaca). */
    @Test
    void dataImportReadsHuggingFaceDatasetsFolders() throws Exception {
        assumePython("datasets", "the Hugging Face datasets check is skipped");
        Path script = dir.resolve("make_ds.py");
        Files.writeString(script, String.join("\n",
                "import sys",
                "from datasets import Dataset",
                "Dataset.from_list([{'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'},",
                "    {'role': 'assistant', 'content': 'Hello!'}]}, {'messages': [{'role': 'user', 'content': 'Why?'},",
                "    {'role': 'assistant', 'content': 'Because \u2713'}]}]).save_to_disk(sys.argv[1] + '/chat')",
                "Dataset.from_list([{'instruction': 'Say hi.', 'input': '', 'output': 'Hi'}]).save_to_disk(sys.argv[1] + '/alpaca')", ""));
        python(script.toString(), dir.toString());
        Run r = limactl("data", "import", dir.resolve("chat").toString(), dir.resolve("chat.arrow").toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("2 examples"), r.out());
        r = limactl("data", "export", dir.resolve("chat.arrow").toString(), dir.resolve("chat.jsonl").toString(), "--format", "chat");
        assertEquals(0, r.code(), r.err());
        List<String> lines = Files.readAllLines(dir.resolve("chat.jsonl"));
        assertTrue(lines.get(0).contains("{\"role\":\"user\",\"content\":\"Be brief.\\n\\nHi\"}"), lines.get(0));
        assertTrue(lines.get(1).contains("Because ✓"), lines.get(1));
        r = limactl("data", "import", dir.resolve("alpaca").toString(), dir.resolve("alpaca.arrow").toString());
        assertEquals(0, r.code(), r.err());
        assertEquals(ExitCodes.INVALID_INPUT, limactl("data", "export", dir.resolve("chat.arrow").toString(), dir.resolve("x.jsonl").toString(),
                "--format", "sharegpt").code());
        // Parquet, as the Hub publishes datasets: written by pandas/pyarrow, imported, trained on, exported and read back by pyarrow
        Path pq = dir.resolve("chat.parquet");
        python("-c", "import sys, pyarrow as pa, pyarrow.parquet as pq; pq.write_table(pa.table({'messages': [[{'role': 'system', 'content':"
                + " 'Be brief.'}, {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}], [{'role': 'user', 'content':"
                + " 'Why?'}, {'role': 'assistant', 'content': 'Because \u2713'}]]}), sys.argv[1])", pq.toString());
        r = limactl("data", "import", pq.toString(), dir.resolve("pq.arrow").toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("2 examples"), r.out());
        r = limactl("data", "export", dir.resolve("pq.arrow").toString(), dir.resolve("out.parquet").toString());
        assertEquals(0, r.code(), r.err());
        JsonNode back = pythonJson("-c", "import sys, json, pyarrow.parquet as pq; print(json.dumps(pq.read_table(sys.argv[1]).to_pylist()))",
                dir.resolve("out.parquet").toString());
        assertEquals("Be brief.\n\nHi", back.get(0).get("messages").get(0).get("content").asText(), back.toString());
        assertEquals("assistant", back.get(1).get("messages").get(1).get("role").asText());
        assertEquals("Because \u2713", back.get(1).get("messages").get(1).get("content").asText());
        Files.writeString(dir.resolve("junk.parquet"), "PAR1 but not really");
        r = limactl("data", "import", dir.resolve("junk.parquet").toString(), dir.resolve("junk.arrow").toString());
        assertEquals(ExitCodes.INVALID_INPUT, r.code(), r.err());
        assertTrue(r.err().contains("junk.parquet: not a readable Parquet file"), r.err());
        assertTrue(Files.notExists(dir.resolve("junk.arrow")));
    }

    /** limactl report: one self-contained page with the run's charts and checkpoints; not a run: exit 2. */
    @Test
    void reportWritesOnePageAboutARun() throws Exception {
        Path run = dir.resolve("rep");
        assertEquals(0, limactl(concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random", "--run", run.toString()},
                java.util.Arrays.copyOfRange(SMALL, 0, 12))).code());
        Run r = limactl("report", run.toString());
        assertEquals(0, r.code(), r.err());
        int steps = Files.readAllLines(run.resolve("metrics.jsonl")).size();
        assertTrue(r.out().contains("wrote " + run.resolve("report.html") + ": " + steps + " steps; loss, learning rate, gradient norm, throughput,"
                + " dev perplexity, checkpoints"), r.out());
        String html = Files.readString(run.resolve("report.html"));
        assertEquals(5, html.split("<svg", -1).length - 1, "five charts expected");
        assertTrue(html.contains("Dev perplexity") && html.contains("epoch-01") && html.contains("epoch-02"));
        double ppl = new ObjectMapper().readTree(run.resolve("checkpoints/epoch-02/limactl.json").toFile()).get("dev_perplexity").asDouble();
        assertTrue(html.contains(String.format(java.util.Locale.ROOT, "%.3f", ppl)), "the checkpoint table lacks its perplexity");
        Run notRun = limactl("report", dir.toString());
        assertEquals(ExitCodes.INVALID_INPUT, notRun.code());
        assertTrue(notRun.err().contains("is not a run directory"), notRun.err());
    }

    /** checkpoint.keep: epochs no term keeps are not written, last:N prunes older ones and says so, bad rules are exit 2. */
    @Test
    void checkpointKeepWritesAndPrunesOnlyWhatItSays() throws Exception {
        String[] small = java.util.Arrays.copyOfRange(SMALL, 0, 8);
        Path run = dir.resolve("keep");
        Run r = limactl(concat(new String[] {"train", "--preset", "demo", "--init", "random", "--run", run.toString(), "--set", "training.epochs=4",
                "--set", "checkpoint.keep=1,last:2"}, small));
        assertEquals(0, r.code(), r.err());
        List<String> kept;
        try (var ls = Files.list(run.resolve("checkpoints"))) {
            kept = ls.map(p -> p.getFileName().toString()).sorted().toList();
        }
        assertEquals(List.of("epoch-01", "epoch-03", "epoch-04"), kept);
        assertTrue(r.err().contains("pruned " + run.resolve("checkpoints/epoch-02") + " (checkpoint.keep: 1,last:2)"), r.err());
        Path window = dir.resolve("window");
        r = limactl(concat(new String[] {"train", "--preset", "demo", "--init", "random", "--run", window.toString(), "--set", "training.epochs=4",
                "--set", "checkpoint.keep=2-3"}, small));
        assertEquals(0, r.code(), r.err());
        try (var ls = Files.list(window.resolve("checkpoints"))) {
            assertEquals(List.of("epoch-02", "epoch-03"), ls.map(p -> p.getFileName().toString()).sorted().toList());
        }
        assertTrue(r.err().contains("epoch 1: no checkpoint (checkpoint.keep)"), r.err());
        assertFalse(r.err().contains("pruned"), "nothing was written that needed pruning: " + r.err());
        for (String bad : new String[] {"0", "3-2", "last:0", "best", "", "20-30", "1,,2", "99999999999"}) {
            Run b = limactl(concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random", "--run", dir.resolve("bad").toString(),
                    "--set", "training.epochs=4", "--set", "checkpoint.keep=" + bad}, small));
            assertEquals(ExitCodes.INVALID_INPUT, b.code(), bad + ": " + b.err());
            assertTrue(b.err().contains("checkpoint.keep"), b.err());
            assertFalse(Files.exists(dir.resolve("bad/config.yaml")), "a refused run left its config");
        }
    }

    /** A character-level tokenizer.json (written for the tests) with <unk>, <s>, </s>, printable ASCII, then the given special tokens. */
    static Path charTokenizer(Path base, String... specials) throws Exception {
        Files.createDirectories(base);
        StringBuilder vocab = new StringBuilder("\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2");
        int id = 3;
        for (char ch = 32; ch < 127; ch++) {
            vocab.append(", ").append(new ObjectMapper().writeValueAsString(String.valueOf(ch))).append(": ").append(id++);
        }
        StringBuilder added = new StringBuilder();
        List<String> all = new java.util.ArrayList<>(List.of("<unk>", "<s>", "</s>"));
        all.addAll(List.of(specials));
        for (int i = 0; i < all.size(); i++) {
            int tid = i < 3 ? i : id++;
            if (i >= 3) vocab.append(", ").append(new ObjectMapper().writeValueAsString(all.get(i))).append(": ").append(tid);
            added.append(added.length() == 0 ? "" : ", ").append("{\"id\": ").append(tid).append(", \"content\": ")
                    .append(new ObjectMapper().writeValueAsString(all.get(i)))
                    .append(", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}");
        }
        Files.writeString(base.resolve("tokenizer.json"), "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": ["
                + added + "], \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \".\"}, \"behavior\": \"Isolated\","
                + " \"invert\": false}, \"post_processor\": null, \"decoder\": null, \"model\": {\"type\": \"WordLevel\", \"vocab\": {" + vocab
                + "}, \"unk_token\": \"<unk>\"}}");
        return base;
    }

    /** model.eot_token reuses a token the tokenizer has (as Llama 3's <|eot_id|>): no new row, the template and limactl.json say it. */
    @Test
    void eotTokenCanReuseATokenTheTokenizerHas() throws Exception {
        Path base = charTokenizer(dir.resolve("eot-tok"), "<|eot_id|>");
        Path run = dir.resolve("eot-run");
        String[] common = {"-q", "train", "--preset", "demo", "--init", "random", "--set", "model.tokenizer=" + base, "--set", "training.epochs=1"};
        Run t = limactl(concat(concat(common, "--run", run.toString(), "--set", "model.eot_token=<|eot_id|>"), java.util.Arrays.copyOfRange(SMALL, 0, 8)));
        assertEquals(0, t.code(), t.err());
        Path ck = run.resolve("checkpoints/epoch-01");
        assertEquals(98, new ObjectMapper().readTree(ck.resolve("limactl.json").toFile()).get("eot_token_id").asInt());
        assertEquals(99, new ObjectMapper().readTree(ck.resolve("config.json").toFile()).get("vocab_size").asInt(), "no row was added");
        JsonNode tc = new ObjectMapper().readTree(ck.resolve("tokenizer_config.json").toFile());
        assertTrue(tc.get("chat_template").asText().contains("'<|eot_id|>'"), tc.toString());
        assertEquals(4, new ObjectMapper().readTree(ck.resolve("tokenizer.json").toFile()).get("added_tokens").size(), "no token added to tokenizer.json");
        Path prompts = dir.resolve("eot-p.jsonl");
        Files.writeString(prompts, "{\"conversations\": [\"Hi\"]}\n");
        assertEquals(0, limactl("-q", "generate", "-m", ck.toString(), "--prompts", prompts.toString(), "--out", dir.resolve("eot-a.jsonl").toString(),
                "--max-new-tokens", "4").code());
        for (String bad : new String[] {"</s>", "abc"}) {
            Run b = limactl(concat(concat(common, "--run", dir.resolve("eot-bad").toString(), "--set", "model.eot_token=" + bad),
                    java.util.Arrays.copyOfRange(SMALL, 0, 8)));
            assertEquals(ExitCodes.INVALID_INPUT, b.code(), bad + ": " + b.err());
            assertTrue(b.err().contains("model.eot_token"), b.err());
            assertFalse(Files.exists(dir.resolve("eot-bad/config.yaml")), "a refused run left its config");
        }
    }

    /**
     * A base whose tokenizer is only a tokenizer.json (here a character-level one written for the test):
     * every checkpoint holds that file and the base's tokenizer_config.json as regular files (it once got an
     * empty directory named tokenizer.model), and generate runs on the checkpoint.
     */
    @Test
    void aTokenizerJsonOnlyBaseGivesCheckpointsWithItsTokenizerFiles() throws Exception {
        Path base = charTokenizer(dir.resolve("hf-tok"));
        Files.writeString(base.resolve("tokenizer_config.json"), "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}");
        Path run = dir.resolve("hf-run");
        Run t = limactl(concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random", "--run", run.toString(),
                "--set", "model.tokenizer=" + base, "--set", "training.epochs=1"}, java.util.Arrays.copyOfRange(SMALL, 0, 8)));
        assertEquals(0, t.code(), t.err());
        Path ck = run.resolve("checkpoints/epoch-01");
        assertTrue(Files.isRegularFile(ck.resolve("tokenizer.json")));
        JsonNode baseTok = new ObjectMapper().readTree(base.resolve("tokenizer.json").toFile()), ckTok = new ObjectMapper().readTree(ck.resolve("tokenizer.json").toFile());
        assertEquals(baseTok.get("model"), ckTok.get("model"), "the base's tokenizer model should be kept as it is");
        assertEquals(baseTok.get("added_tokens").size() + 1, ckTok.get("added_tokens").size(), "LIMA's EOT should be added");
        assertTrue(Files.isRegularFile(ck.resolve("tokenizer_config.json")));
        assertFalse(Files.exists(ck.resolve("tokenizer.model")), "a tokenizer.model appeared in the checkpoint");
        Path prompts = dir.resolve("p.jsonl");
        Files.writeString(prompts, "{\"conversations\": [\"How do I brew coffee?\"]}\n");
        Run g = limactl("-q", "generate", "-m", ck.toString(), "--prompts", prompts.toString(), "--out", dir.resolve("hf-answers.jsonl").toString(),
                "--max-new-tokens", "8");
        assertEquals(0, g.code(), g.err());
        assertEquals(1, Files.readAllLines(dir.resolve("hf-answers.jsonl")).size());
    }

    @Test
    void generateAnswersPromptsAndResumesWhereItStopped() throws Exception {
        Path run = dir.resolve("g");
        assertEquals(0, limactl(concat(new String[] {"-q", "demo", "--run", run.toString()}, SMALL)).code());
        Path ck = run.resolve("checkpoints/epoch-02"), devFile = run.resolve("embedded/demo/dev.jsonl"), out = dir.resolve("answers.jsonl");
        Run g = limactl("-q", "generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", out.toString(),
                "--samples", "2", "--max-new-tokens", "12", "--batch", "4");
        assertEquals(0, g.code(), g.err());
        List<String> lines = Files.readAllLines(out);
        assertEquals(12, lines.size());  // 6 dev prompts x 2 samples
        JsonNode first = new ObjectMapper().readTree(lines.get(0));
        assertTrue(first.get("generated_tokens").asInt() <= 12 && first.has("finish") && first.has("response"), first.toString());
        // Lose the last 5 answers (as if killed), rerun: only those are generated again.
        Files.write(out, lines.subList(0, 7));
        Run again = limactl("generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", out.toString(),
                "--samples", "2", "--max-new-tokens", "12");
        assertEquals(0, again.code(), again.err());
        assertTrue(again.err().contains("resuming: 7 answers already in"), again.err());
        assertEquals(lines, Files.readAllLines(out));  // same seeds: the redone answers are the same
        // a kill mid-line: the cut line is dropped (not appended to) and that answer redone
        String whole = Files.readString(out);
        Files.writeString(out, whole.substring(0, whole.length() - 40));
        Run torn = limactl("generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", out.toString(),
                "--samples", "2", "--max-new-tokens", "12");
        assertEquals(0, torn.code(), torn.err());
        assertTrue(torn.err().contains("dropped its last line"), torn.err());
        assertEquals(lines, Files.readAllLines(out));
        // a kill inside a multi-byte character of the last line: torn, redone; an invalid byte elsewhere: named
        byte[] bytes = Files.readAllBytes(out);
        byte[] cut = java.util.Arrays.copyOf(bytes, bytes.length - 30);
        cut[cut.length - 1] = (byte) 0xE2;  // the first byte of a 3-byte character, cut there
        Files.write(out, cut);
        Run cutChar = limactl("generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", out.toString(),
                "--samples", "2", "--max-new-tokens", "12");
        assertEquals(0, cutChar.code(), cutChar.err());
        assertEquals(lines, Files.readAllLines(out));
        bytes = Files.readAllBytes(out);
        bytes[10] = (byte) 0xFF;
        Files.write(out, bytes);
        Run invalid = limactl("generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", out.toString(),
                "--samples", "2", "--max-new-tokens", "12");
        assertEquals(ExitCodes.INVALID_INPUT, invalid.code(), invalid.err());
        assertTrue(invalid.err().contains(out + ":1: not valid UTF-8 at byte 11"), invalid.err());
        Files.write(out, lines);
        // answers of other sampling settings are not mixed in silently
        Run other = limactl("generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", out.toString(),
                "--samples", "3", "--max-new-tokens", "12", "--temperature", "0.3");
        assertEquals(ExitCodes.INVALID_INPUT, other.code(), other.err());
        assertTrue(other.err().contains("holds an answer of other settings") && other.err().contains("--mix-settings"), other.err());
        Run mixed = limactl("-q", "generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", out.toString(),
                "--samples", "3", "--max-new-tokens", "12", "--temperature", "0.3", "--mix-settings");
        assertEquals(0, mixed.code(), mixed.err());
        assertEquals(18, Files.readAllLines(out).size());
        // A CUDA device on a machine without one is a request this machine cannot serve: exit 2 and
        // the reason, no stack trace.
        org.junit.jupiter.api.Assumptions.assumeTrue(dev.limactl.engine.CudaPlugins.select().driverVersion() == 0, "has a GPU");
        Run cuda = limactl("generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", dir.resolve("c.jsonl").toString(),
                "--device", "cuda");
        assertEquals(ExitCodes.INVALID_INPUT, cuda.code(), cuda.err());
        assertTrue(cuda.err().contains("device \"cuda\" needs an NVIDIA GPU and its driver, and this machine has no usable NVIDIA driver"),
                cuda.err());
        assertTrue(!cuda.err().contains("\tat "), cuda.err());
    }

    @Test
    void nativeStatusesMapToTheDocumentedExitCodes() {
        for (dev.limactl.engine.LimaStatus s : dev.limactl.engine.LimaStatus.values()) {
            int want = switch (s) {
                case OK -> 0;
                case INVALID_ARGUMENT, FORMAT, SHAPE, UNSUPPORTED -> 2;
                case IO, OUT_OF_MEMORY -> 1;
                case STATE -> 3;
                case INTERNAL -> 4;
            };
            assertEquals(want, ExitCodes.of(s), s.toString());
            if (s != dev.limactl.engine.LimaStatus.OK) {
                assertEquals(want, Main.exitCode(new dev.limactl.engine.LimaException(s, "x")), s.toString());
            }
        }
    }

    @Test
    void chatKeepsHistoryAndStreamsAnswers() throws Exception {
        Path run = dir.resolve("c");
        assertEquals(0, limactl(concat(new String[] {"-q", "demo", "--run", run.toString()}, SMALL)).code());
        java.io.InputStream stdin = System.in;
        try {
            System.setIn(new java.io.ByteArrayInputStream("Hello?\n/reset\nHow do I grind?\n/exit\n".getBytes()));
            Run c = limactl("chat", "-m", run.resolve("checkpoints/epoch-02").toString(), "--max-new-tokens", "8");
            assertEquals(0, c.code(), c.err());
            assertEquals(4, c.out().split("you> ", -1).length - 1, c.out());  // 3 lines and /exit
            assertEquals(2, c.out().split("lima> ", -1).length - 1, c.out());
            assertTrue(c.out().contains("(conversation reset)"), c.out());
        } finally {
            System.setIn(stdin);
        }
        chatOnATerminalEditsRecallsAndStops(run.resolve("checkpoints/epoch-02"));
        Run bad = limactl("generate", "-m", dir.resolve("nomodel").toString(), "--prompts", "x.jsonl", "--out", "o.jsonl");
        assertEquals(ExitCodes.INVALID_INPUT, bad.code());
    }

    @Test
    void evalWithTheModelsOwnServeAsTheJudge() throws Exception {
        Path run = dir.resolve("e");  // the judge prompt (Likert template) needs more than the demo's 1024 positions
        assertEquals(0, limactl(concat(concat(new String[] {"-q", "demo", "--run", run.toString()}, SMALL), "--set",
                "model.architecture.max_position_embeddings=2048")).code());
        Path ck = run.resolve("checkpoints/epoch-02"), devFile = run.resolve("embedded/demo/dev.jsonl");
        Path ours = dir.resolve("ours.jsonl"), base = dir.resolve("base.jsonl");
        assertEquals(0, limactl("-q", "generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", ours.toString(),
                "--samples", "2", "--max-new-tokens", "8").code());
        assertEquals(0, limactl("-q", "generate", "-m", ck.toString(), "--prompts", devFile.toString(), "--out", base.toString(),
                "--max-new-tokens", "8", "--seed", "9").code());
        try (dev.limactl.generate.ModelDir md = new dev.limactl.generate.ModelDir(ck, null, 2048);
             dev.limactl.serve.OpenAiServer judge = new dev.limactl.serve.OpenAiServer(md.answerer, "demo-judge", "127.0.0.1", 0, null, 8)) {
            judge.start();
            String url = "http://127.0.0.1:" + judge.port() + "/v1";
            Path out = dir.resolve("eval");
            Run l = limactl("-q", "eval", "likert", "--responses", ours.toString(), "--samples", "2", "--judge-url", url,
                    "--judge-model", "demo-judge", "--out", out.toString());
            assertEquals(0, l.code(), l.err());
            assertTrue(l.out().contains("ours: ") && l.out().contains("12 calls"), l.out());  // 6 prompts x 2 samples
            for (String f : List.of("likert.json", "likert.md", "likert.png", "likert.svg")) assertTrue(Files.exists(out.resolve(f)), f);
            Run again = limactl("-q", "eval", "likert", "--responses", ours.toString(), "--samples", "2", "--judge-url", url,
                    "--judge-model", "demo-judge", "--out", out.toString());
            assertTrue(again.out().contains("0 calls, 12 answers from the cache"), again.out());
            Run p = limactl("-q", "eval", "pairwise", "--ours", ours.toString(), "--baseline", base.toString(), "--judge-url", url,
                    "--judge-model", "demo-judge", "--out", out.toString());
            assertEquals(0, p.code(), p.err());
            assertTrue(p.out().contains("ours vs base: win"), p.out());
            Files.writeString(dir.resolve("human.csv"), "item,label\n" + String.join("\n",
                    new ObjectMapper().readTree(out.resolve("pairwise.json").toFile()).at("/results/0/verdicts").properties().stream()
                            .map(e -> e.getKey() + ",tie").toList()) + "\n");
            Run agree = limactl("eval", "agreement", "--a", dir.resolve("human.csv").toString(), "--b", out.resolve("pairwise.json").toString());
            assertEquals(0, agree.code(), agree.err());
            // the demo judge's verdicts are unparsable: left out and said, not scored as disagreements
            assertTrue(agree.out().contains("over 6 shared items") || agree.out().contains("n/a: 6 shared items"), agree.out());
            Run sel = limactl("-q", "select", "--run", run.toString(), "--epochs", "1-2", "--dev", devFile.toString(), "--max-new-tokens", "6",
                    "--judge-url", url, "--judge-model", "demo-judge", "--apply");
            assertEquals(0, sel.code(), sel.err());
            assertTrue(sel.out().contains("epoch  1  Likert") && sel.out().contains("epoch  2  Likert"), sel.out());
            JsonNode chosen = new ObjectMapper().readTree(run.resolve("selected.json").toFile());
            assertTrue(Files.isSymbolicLink(run.resolve("checkpoints/selected")));
            assertEquals(String.format("epoch-%02d", chosen.get("epoch").asInt()),
                    Files.readSymbolicLink(run.resolve("checkpoints/selected")).toString());
            for (String f : List.of("select.json", "select.md", "select.png", "select.svg")) assertTrue(Files.exists(run.resolve("select/" + f)), f);
            assertEquals(ExitCodes.INVALID_INPUT, limactl("select", "--run", run.toString(), "--epochs", "7-9", "--dev", devFile.toString(),
                    "--judge-url", url).code());
        }
        Run down = limactl("-q", "eval", "absolute", "--responses", ours.toString(), "--judge-url", "http://127.0.0.1:9/v1",
                "--retries", "0", "--out", dir.resolve("down").toString());
        assertEquals(ExitCodes.GENERIC, down.code());
        assertTrue(down.err().contains("failed after 1 attempts: network error: connection refused"), down.err());
        assertTrue(!down.err().contains("null"), down.err());
    }

    @Test
    void experimentRunsEveryStageOncePerVariantAndResumes() throws Exception {
        Path judgeRun = dir.resolve("j");
        assertEquals(0, limactl(concat(concat(new String[] {"-q", "demo", "--run", judgeRun.toString()}, SMALL), "--set",
                "model.architecture.max_position_embeddings=2048")).code());
        Path shared = Path.of("../../shared/data").toAbsolutePath();
        Files.writeString(dir.resolve("se.yaml"), "seed: 1\nsources:\n  - {type: stackexchange, split: train, path: " + shared.resolve("stackexchange")
                + ", groups: {stem: 0, other: 12}, min_answer_score: 3, min_answer_chars: 400}\n");
        Files.writeString(dir.resolve("ni.yaml"), "seed: 1\nsources:\n  - {type: super-ni, split: train, path: " + shared.resolve("natural-instructions/tasks")
                + ", count: 8}\n");
        Files.writeString(dir.resolve("grid.yaml"), String.join("\n", "train_preset: demo",
                "train_set: [model.architecture.hidden_size=32, model.architecture.intermediate_size=64, model.architecture.num_layers=1,",
                "            training.epochs=1, training.batch_size=8, data.max_tokens=128]",
                "test: " + judgeRun.resolve("embedded/demo/dev.jsonl"), "samples: 2", "max_new_tokens: 4", "variants:",
                "  - {name: stackexchange, recipe: se.yaml}", "  - {name: super-ni, recipe: ni.yaml}", ""));
        try (dev.limactl.generate.ModelDir md = new dev.limactl.generate.ModelDir(judgeRun.resolve("checkpoints/epoch-02"), null, 2048);
             dev.limactl.serve.OpenAiServer judge = new dev.limactl.serve.OpenAiServer(md.answerer, "demo-judge", "127.0.0.1", 0, null, 8)) {
            judge.start();
            String url = "http://127.0.0.1:" + judge.port() + "/v1";
            Path out = dir.resolve("exp");
            Run e = limactl("experiment", "--grid", dir.resolve("grid.yaml").toString(), "--out", out.toString(), "--judge-url", url,
                    "--judge-model", "demo-judge");
            assertEquals(0, e.code(), e.err());
            // the variant in training shows its steps
            assertTrue(e.err().contains("stackexchange: training step ") && e.err().contains("(100%)"), e.err());
            assertTrue(e.out().contains("stackexchange") && e.out().contains("super-ni") && e.out().contains("over"), e.out());
            for (String v : List.of("stackexchange", "super-ni")) {
                assertTrue(Files.exists(out.resolve(v + "/data/train.arrow")), v);
                assertTrue(Files.exists(out.resolve(v + "/run/checkpoints/epoch-01/model.safetensors")), v);
                assertEquals(12, Files.readAllLines(out.resolve(v + "/answers.jsonl")).size(), v);  // 6 prompts x 2
            }
            for (String f : List.of("likert.md", "likert.json", "likert.png", "likert.svg")) assertTrue(Files.exists(out.resolve(f)), f);
            long trained = Files.getLastModifiedTime(out.resolve("super-ni/run/checkpoints/epoch-01/model.safetensors")).toMillis();
            Run again = limactl("-q", "experiment", "--grid", dir.resolve("grid.yaml").toString(), "--out", out.toString(), "--judge-url", url,
                    "--judge-model", "demo-judge");
            assertEquals(0, again.code(), again.err());
            assertEquals(e.out().replaceAll("(?s)report:.*", ""), again.out().replaceAll("(?s)report:.*", ""));
            assertEquals(trained, Files.getLastModifiedTime(out.resolve("super-ni/run/checkpoints/epoch-01/model.safetensors")).toMillis());
        }
        Run bad = limactl("experiment", "--grid", dir.resolve("none.yaml").toString(), "--out", dir.resolve("x").toString());
        assertEquals(ExitCodes.INVALID_INPUT, bad.code());
    }

    /** A limactl process (its output in log), returned once the run's first step is in its metrics. */
    Process startTraining(Path run, Path log, String... args) throws Exception {
        String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        java.util.List<String> cmd = new java.util.ArrayList<>(java.util.List.of(javaBin, "--add-opens=java.base/java.nio=ALL-UNNAMED",
                "-Dorg.bytedeco.javacpp.cachedir=" + dir.resolve("cache"), "-cp", System.getProperty("java.class.path"), "dev.limactl.cli.Main"));
        cmd.addAll(java.util.List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (!Files.exists(run.resolve("metrics.jsonl")) || Files.size(run.resolve("metrics.jsonl")) == 0) {
            assertTrue(p.isAlive() && System.nanoTime() < deadline, "training did not start: " + Files.readString(log));
            Thread.sleep(100);
        }
        return p;
    }

    /** A real limactl process, a real SIGINT: exit 130, a saved state, and --resume finishes the run. */
    @Test
    void ctrlCSavesAResumableStateAndExits130() throws Exception {
        Path run = dir.resolve("sigint");
        Process p = startTraining(run, dir.resolve("log.txt"), "train", "--run", run.toString(), "--preset", "demo", "--set", "training.epochs=200");
        new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor();
        assertTrue(p.waitFor(120, java.util.concurrent.TimeUnit.SECONDS), "limactl did not exit after SIGINT");
        String log = Files.readString(dir.resolve("log.txt"));
        assertEquals(ExitCodes.INTERRUPTED, p.exitValue(), log);
        assertTrue(log.contains("resume with: limactl train --resume --run " + run), log);
        JsonNode pos = new ObjectMapper().readTree(run.resolve("state/trainer.json").toFile());
        long saved = pos.get("global_step").asLong();
        assertTrue(saved >= 1 && saved < 200 * 8, pos.toString());
        assertEquals(saved, Files.readAllLines(run.resolve("metrics.jsonl")).size());
    }

    /**
     * A rank that hangs (here: suspended with SIGSTOP) never hangs the job: the other rank fails at its next
     * collective within distributed.timeout_s, and the launcher kills the hung one after its grace period,
     * naming it.
     */
    @Test
    void aHungRankEndsTheJobWithinTheTimeoutAndIsNamed() throws Exception {
        Path run = dir.resolve("hung");
        Process p = startTraining(run, dir.resolve("hung.txt"), concat(concat(new String[] {"-q", "train", "--run", run.toString(), "--preset",
                "demo", "--init", "random"}, SMALL), "--set", "training.epochs=400", "--set", "distributed.timeout_s=5", "--nproc-per-node", "2"));
        ProcessHandle rank1 = p.toHandle().children().max(java.util.Comparator.comparingLong(ProcessHandle::pid)).orElseThrow();  // the last started
        long t0 = System.nanoTime();
        new ProcessBuilder("kill", "-STOP", Long.toString(rank1.pid())).start().waitFor();
        boolean ended = p.waitFor(5 + LocalRanks.GRACE_S + 60, java.util.concurrent.TimeUnit.SECONDS);
        if (!ended) new ProcessBuilder("kill", "-KILL", Long.toString(rank1.pid())).start().waitFor();
        assertTrue(ended, "the launcher still waits on a hung rank: " + Files.readString(dir.resolve("hung.txt")));
        double seconds = (System.nanoTime() - t0) / 1e9;
        String log = Files.readString(dir.resolve("hung.txt"));
        assertTrue(p.exitValue() != 0, log);
        assertTrue(log.contains("Timed out waiting 5000ms"), log);  // rank 0's collective gave up
        assertTrue(log.matches("(?s).*rank [01] did not stop within " + LocalRanks.GRACE_S + " s and was killed.*"), log);
        assertTrue(seconds < 5 + LocalRanks.GRACE_S + 45, "took " + seconds + " s");
        assertFalse(rank1.isAlive());
    }

    @Test
    void planChoosesAZeroStageOrASingleGpuModeAndRefusesBadSizes() {
        Run z = limactl("plan", "--model", "65b", "--gpus", "64", "--gpu-memory", "80GB", "--recompute");
        assertEquals(0, z.code(), z.err());
        assertTrue(z.out().contains("choice: ZeRO-3"), z.out());
        Run m = limactl("plan", "--model", "7b", "--modes", "--gpu-memory", "24GB", "--tokens", "2048", "--recompute");
        assertEquals(0, m.code(), m.err());
        assertTrue(m.out().contains("full") && m.out().contains("offload") && m.out().contains("qlora"), m.out());
        // offload keeps bf16 weights and a few units' gradients on the device (the rest on the host)
        assertTrue(m.out().contains("choice: offload (the first that fits, in the order above; it needs 10"), "7B: offload is the first"
                + " mode that fits 24 GB, with ~101 GiB of host memory: " + m.out());
        assertTrue(m.out().matches("(?s).*offload +1[0-9]\\.[0-9] GiB +10[0-9]\\.[0-9] GiB.*"), m.out());
        Run none = limactl("plan", "--model", "65b", "--modes", "--gpu-memory", "24GB", "--tokens", "2048", "--recompute");
        assertEquals(ExitCodes.GENERIC, none.code(), none.out());
        assertTrue(none.out().contains("nothing fits one GPU"), none.out());
        Run bad = limactl("plan", "--model", "7b", "--modes", "--lora-r", "0");
        assertEquals(ExitCodes.INVALID_INPUT, bad.code());
        assertTrue(bad.err().contains("--lora-r must be in [1, 65536]"), bad.err());
        Run mem = limactl("plan", "--model", "7b", "--gpus", "1", "--gpu-memory", "lots");
        assertEquals(ExitCodes.INVALID_INPUT, mem.code());
    }

    @Test
    void badInputExitsWithTwoAndNamesTheProblem() throws Exception {
        Run r = limactl("train", "--run", dir.resolve("r").toString(), "--preset", "demo", "--set", "optimizer.lrr=1");
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
        assertTrue(r.err().contains("unknown key \"optimizer.lrr\""), r.err());
        r = limactl("train", "--run", dir.resolve("r2").toString(), "--preset", "demo", "--data", dir.resolve("missing.jsonl").toString());
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
        assertTrue(r.err().contains("config key \"data.train\": " + dir.resolve("missing.jsonl") + " does not exist"), r.err());
        assertTrue(Files.notExists(dir.resolve("r2")), "nothing is written for a rejected config");
        Path yaml = dir.resolve("bad-utf8.yaml");
        Files.write(yaml, new byte[] {'t', 'r', 'a', 'i', 'n', 'i', 'n', 'g', ':', '\n', ' ', ' ', 'e', 'p', 'o', 'c', 'h', 's', ':', ' ', '1', ' ', '#', (byte) 0xC3, '\n'});
        r = limactl("train", "--run", dir.resolve("r3").toString(), "--preset", "demo", "--config", yaml.toString());
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
        assertTrue(r.err().contains(yaml + ":2: not valid UTF-8 at byte 14"), r.err());
        r = limactl("train", "--run", dir.resolve("r3").toString(), "--model", dir.resolve("nomodel").toString(), "--data", "x.jsonl");
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
        assertTrue(r.err().contains("config key \"model.path\""), r.err());
        Files.writeString(dir.resolve("broken.jsonl"), "{\"conversations\": [\"a\",\n");
        r = limactl("-q", "train", "--run", dir.resolve("r4").toString(), "--preset", "demo", "--data", dir.resolve("broken.jsonl").toString(),
                "--set", "data.dev=");
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
        assertEquals(1, r.err().split("limactl: ", -1).length - 1, r.err());  // a failing run reports its error once
        assertTrue(r.err().contains("broken.jsonl:1: "), r.err());
        r = limactl("train");
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
        assertTrue(r.err().contains("Missing required option: '--run=<run>'"), r.err());
        r = limactl("nonsense");
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
    }

    /** The metrics of two runs of the same steps, line by line (the same number of steps asserted). */
    static List<JsonNode[]> stepPairs(Path a, Path b) throws java.io.IOException {
        ObjectMapper json = new ObjectMapper();
        List<String> x = Files.readAllLines(a.resolve("metrics.jsonl")), y = Files.readAllLines(b.resolve("metrics.jsonl"));
        assertEquals(x.size(), y.size());
        List<JsonNode[]> out = new java.util.ArrayList<>();
        for (int i = 0; i < x.size(); i++) out.add(new JsonNode[] {json.readTree(x.get(i)), json.readTree(y.get(i))});
        return out;
    }

    @Test
    void twoLocalRanksTrainAsOneProcessDoesAndResumeWithAnyNumberOfRanks() throws Exception {
        Path one = dir.resolve("one"), two = dir.resolve("two");
        String[] common = concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random"}, SMALL);
        assertEquals(0, limactl(concat(common, "--run", one.toString())).code());
        Run r = limactl(concat(common, "--run", two.toString(), "--nproc-per-node", "2"));
        assertEquals(0, r.code(), r.err());
        List<JsonNode[]> steps = stepPairs(one, two);
        for (int i = 0; i < steps.size(); i++) {
            double x = steps.get(i)[0].get("loss").asDouble(), y = steps.get(i)[1].get("loss").asDouble();
            assertEquals(x, y, 1e-5 * x, "loss of step " + (i + 1));
            assertTrue(steps.get(i)[1].get("comm_s").asDouble() > 0, "time in collectives is reported");
        }
        assertTrue(Files.exists(two.resolve("state/optimizer-rank0-of2.safetensors")) && Files.exists(two.resolve("state/optimizer-rank1-of2.safetensors")));
        // a state sharded over two ranks resumes on one process (its shards assembled), and that one's on three ranks
        Files.writeString(two.resolve("config.yaml"), Files.readString(two.resolve("config.yaml")).replace("epochs: 2", "epochs: 3"));
        Run single = limactl("-q", "train", "--resume", "--run", two.toString());
        assertEquals(0, single.code(), single.err());
        Files.writeString(two.resolve("config.yaml"), Files.readString(two.resolve("config.yaml")).replace("epochs: 3", "epochs: 4"));
        Run three = limactl("-q", "train", "--resume", "--run", two.toString(), "--nproc-per-node", "3");
        assertEquals(0, three.code(), three.err());
        assertEquals(steps.size() * 2, Files.readAllLines(two.resolve("metrics.jsonl")).size());
        assertTrue(Files.exists(two.resolve("state/optimizer-rank2-of3.safetensors")));
    }

    @Test
    void offloadedOptimiserTrainsBitForBitAsThePlainRunAndItsStateResumesEitherWay() throws Exception {
        Path one = dir.resolve("plain"), off = dir.resolve("offload");
        String[] common = concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random"}, SMALL);
        assertEquals(0, limactl(concat(common, "--run", one.toString())).code());
        Run r = limactl(concat(common, "--run", off.toString(), "--set", "training.offload=on"));
        assertEquals(0, r.code(), r.err());
        List<JsonNode[]> steps = stepPairs(one, off);
        for (int i = 0; i < steps.size(); i++) {
            for (String k : List.of("loss", "grad_norm", "lr", "dev_perplexity"))
                assertEquals(steps.get(i)[0].path(k).asDouble(), steps.get(i)[1].path(k).asDouble(), 0.0, k + " of step " + (i + 1));
        }
        for (String ck : List.of("checkpoints/epoch-01", "checkpoints/epoch-02"))
            try (var files = Files.list(one.resolve(ck))) {
                for (Path f : files.filter(f -> f.getFileName().toString().endsWith(".safetensors")).toList())
                    assertArrayEquals(Files.readAllBytes(f), Files.readAllBytes(off.resolve(ck).resolve(f.getFileName())), f.toString());
            }
        // the offloaded run's state goes on without offload, and back
        Path cfg = off.resolve("config.yaml");
        String yaml = Files.readString(cfg);
        assertTrue(yaml.matches("(?s).*\\n  offload: (true|on|\"on\")\\n.*"), yaml);
        Files.writeString(cfg, yaml.replace("epochs: 2", "epochs: 3").replaceAll("\\n  offload: [^\\n]*", "\n  offload: \"off\""));
        Run plain = limactl("-q", "train", "--resume", "--run", off.toString());
        assertEquals(0, plain.code(), plain.err());
        Files.writeString(cfg, Files.readString(cfg).replace("epochs: 3", "epochs: 4").replace("offload: \"off\"", "offload: \"on\""));
        Run back = limactl("-q", "train", "--resume", "--run", off.toString());
        assertEquals(0, back.code(), back.err());
        // the same two resumes of the plain run: every step after them equal too
        Path oneCfg = one.resolve("config.yaml");
        Files.writeString(oneCfg, Files.readString(oneCfg).replace("epochs: 2", "epochs: 3"));
        assertEquals(0, limactl("-q", "train", "--resume", "--run", one.toString()).code());
        Files.writeString(oneCfg, Files.readString(oneCfg).replace("epochs: 3", "epochs: 4"));
        assertEquals(0, limactl("-q", "train", "--resume", "--run", one.toString()).code());
        steps = stepPairs(one, off);
        for (int i = 0; i < steps.size(); i++)
            assertEquals(steps.get(i)[0].path("loss").asDouble(), steps.get(i)[1].path("loss").asDouble(), 0.0, "loss of step " + (i + 1));
        // bad settings are named
        Run bad = limactl(concat(common, "--run", dir.resolve("bad").toString(), "--set", "training.offload=sometimes"));
        assertEquals(ExitCodes.INVALID_INPUT, bad.code(), bad.err());
        assertTrue(bad.err().contains("\"training.offload\" must be auto, on or off"), bad.err());
        Run lora = limactl(concat(common, "--run", dir.resolve("offlora").toString(), "--set", "training.offload=on", "--set", "adapter.type=lora"));
        assertEquals(ExitCodes.INVALID_INPUT, lora.code(), lora.err());
        assertTrue(lora.err().contains("\"training.offload\" on is for full fine-tuning"), lora.err());
        Run ranks = limactl(concat(common, "--run", dir.resolve("offdp").toString(), "--set", "training.offload=on", "--nproc-per-node", "2"));
        assertEquals(ExitCodes.INVALID_INPUT, ranks.code(), ranks.err());
        assertTrue(ranks.err().contains("\"training.offload\" on is for one process"), ranks.err());
        assertFalse(Files.exists(dir.resolve("offdp")), "nothing is written before the ranks would start");
        if (!Files.exists(Path.of("/dev/nvidiactl"))) {  // ranks that fail at their start (no CUDA here) leave no run behind
            Run nogpu = limactl(concat(common, "--run", dir.resolve("cudadp").toString(), "--set", "training.device=cuda",
                    "--set", "distributed.zero_stage=3", "--nproc-per-node", "2"));
            assertNotEquals(0, nogpu.code(), nogpu.err());
            assertTrue(nogpu.err().contains("rank 0 exit"), nogpu.err());
            assertFalse(Files.exists(dir.resolve("cudadp")), "a failed start leaves nothing: " + nogpu.err());
        }
    }

    @Test
    void zeroThreeRanksTrainAsOneProcessDoesAndTheirStateResumesAtOtherStages() throws Exception {
        Path one = dir.resolve("one"), z3 = dir.resolve("z3");
        String[] common = concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random"}, SMALL);
        assertEquals(0, limactl(concat(common, "--run", one.toString())).code());
        Run r = limactl(concat(common, "--run", z3.toString(), "--nproc-per-node", "2", "--set", "distributed.zero_stage=3"));
        assertEquals(0, r.code(), r.err());
        ObjectMapper json = new ObjectMapper();
        List<String> a = Files.readAllLines(one.resolve("metrics.jsonl")), b = Files.readAllLines(z3.resolve("metrics.jsonl"));
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            JsonNode x = json.readTree(a.get(i)), y = json.readTree(b.get(i));
            assertEquals(x.get("loss").asDouble(), y.get("loss").asDouble(), 1e-5 * x.get("loss").asDouble(), "loss of step " + (i + 1));
            assertEquals(x.get("grad_norm").asDouble(), y.get("grad_norm").asDouble(), 1e-4 * x.get("grad_norm").asDouble());
            assertTrue(y.get("comm_s").asDouble() > 0, "time in collectives is reported");
            if (x.has("dev_perplexity")) {  // evaluated on the sharded model, every rank together
                assertEquals(x.get("dev_perplexity").asDouble(), y.get("dev_perplexity").asDouble(), 1e-5 * x.get("dev_perplexity").asDouble());
            }
        }
        // the checkpoints rank 0 wrote from the gathered weights carry the same dev perplexity
        for (String ck : List.of("checkpoints/epoch-01/limactl.json", "checkpoints/epoch-02/limactl.json")) {
            double x = json.readTree(one.resolve(ck).toFile()).path("dev_perplexity").asDouble(), y = json.readTree(z3.resolve(ck).toFile()).path("dev_perplexity").asDouble();
            assertEquals(x, y, 1e-5 * x, ck);
        }
        assertTrue(Files.exists(z3.resolve("state/optimizer-rank1-of2.safetensors")));
        // the stage-3 shards resume on three stage-1 ranks (assembled and re-cut), and that state on two stage-3 ranks
        Path cfg = z3.resolve("config.yaml");
        Files.writeString(cfg, Files.readString(cfg).replace("epochs: 2", "epochs: 3").replace("zero_stage: 3", "zero_stage: 1"));
        Run three = limactl("-q", "train", "--resume", "--run", z3.toString(), "--nproc-per-node", "3");
        assertEquals(0, three.code(), three.err());
        assertTrue(Files.exists(z3.resolve("state/optimizer-rank2-of3.safetensors")));
        Files.writeString(cfg, Files.readString(cfg).replace("epochs: 3", "epochs: 4").replace("zero_stage: 1", "zero_stage: 3"));
        Run back = limactl("-q", "train", "--resume", "--run", z3.toString(), "--nproc-per-node", "2");
        assertEquals(0, back.code(), back.err());
        assertEquals(a.size() * 2, Files.readAllLines(z3.resolve("metrics.jsonl")).size());
        // an adapter run cannot shard its frozen base
        Run lora = limactl(concat(common, "--run", dir.resolve("z3lora").toString(), "--set", "distributed.zero_stage=3", "--set", "adapter.type=lora"));
        assertEquals(ExitCodes.INVALID_INPUT, lora.code(), lora.err());
        assertTrue(lora.err().contains("distributed.zero_stage"), lora.err());
    }

    /**
     * A GGUF file run in llama.cpp (node-llama-cpp's prebuilt CPU build, which ci/setup.sh installs
     * under ~/.cache/limactl/node-llama-cpp, or $LIMACTL_NODE_LLAMA_CPP): run_gguf.mjs's findings.
     * Skips the calling test, saying why, where it is not installed.
     */
    static JsonNode llamaCpp(Path work, Path gguf, List<String> texts, List<int[]> prompts, int maxNew) throws Exception {
        String cache = System.getenv().getOrDefault("XDG_CACHE_HOME", System.getProperty("user.home") + "/.cache");
        Path nlc = Path.of(System.getenv().getOrDefault("LIMACTL_NODE_LLAMA_CPP", cache + "/limactl/node-llama-cpp"));
        org.junit.jupiter.api.Assumptions.assumeTrue(Files.isDirectory(nlc.resolve("node_modules/node-llama-cpp")),
                "llama.cpp (npm node-llama-cpp) is not installed at " + nlc + " (ci/setup.sh installs it): the llama.cpp run is skipped");
        com.fasterxml.jackson.databind.node.ObjectNode in = new ObjectMapper().createObjectNode();
        texts.forEach(in.putArray("texts")::add);
        var ps = in.putArray("prompts");
        for (int[] p : prompts) {
            var a = ps.addArray();
            for (int id : p) a.add(id);
        }
        in.put("max_new_tokens", maxNew);
        Path input = work.resolve("llama-cpp-input.json"), script = work.resolve("run_gguf.mjs");
        Files.writeString(input, in.toString());
        try (var s = CliTest.class.getResourceAsStream("run_gguf.mjs")) {
            Files.write(script, s.readAllBytes());
        }
        Process p = new ProcessBuilder("node", script.toString(), nlc.toString(), gguf.toString(), input.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(p.waitFor(300, java.util.concurrent.TimeUnit.SECONDS), "llama.cpp did not finish");
        assertEquals(0, p.exitValue(), out);
        return new ObjectMapper().readTree(out.lines().reduce((a, b) -> b).orElseThrow());
    }

    static int freePort() throws java.io.IOException {
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Starts the ranks of `limactl ARGS` as separate JVMs with the given launcher variables per rank; their exit codes. */
    static List<Integer> launchRanks(List<java.util.Map<String, String>> envs, String... args) throws Exception {
        return launchRanks(envs, null, args);
    }

    static List<Integer> launchRanks(List<java.util.Map<String, String>> envs, Path log, String... args) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString()));
        cmd.addAll(java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments());
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(List.of(args));
        List<Process> ps = new java.util.ArrayList<>();
        for (java.util.Map<String, String> env : envs) {
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectOutput(log == null ? ProcessBuilder.Redirect.DISCARD : ProcessBuilder.Redirect.appendTo(log.toFile()));
            pb.environment().putAll(env);
            ps.add(pb.start());
        }
        List<Integer> codes = new java.util.ArrayList<>();
        for (Process p : ps) {
            assertTrue(p.waitFor(5, java.util.concurrent.TimeUnit.MINUTES), "a rank did not finish");
            codes.add(p.exitValue());
        }
        return codes;
    }

    @Test
    void ranksPlacedBySlurmOrOpenMpiVariablesTrainTogether() throws Exception {
        Path one = dir.resolve("one"), slurm = dir.resolve("slurm"), ompi = dir.resolve("ompi");
        String[] common = concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random"}, SMALL);
        assertEquals(0, limactl(concat(common, "--run", one.toString())).code());
        List<java.util.Map<String, String>> s = List.of(
                java.util.Map.of("SLURM_PROCID", "0", "SLURM_NTASKS", "2", "SLURM_LOCALID", "0", "SLURM_JOB_ID", "77"),
                java.util.Map.of("SLURM_PROCID", "1", "SLURM_NTASKS", "2", "SLURM_LOCALID", "1", "SLURM_JOB_ID", "77"));
        assertEquals(List.of(0, 0), launchRanks(s, concat(common, "--run", slurm.toString())));
        assertTrue(Files.isDirectory(slurm.resolve("rendezvous/77.0")), "the job's rendezvous directory in the run");
        List<java.util.Map<String, String>> o = List.of(
                java.util.Map.of("OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "2", "LIMACTL_RENDEZVOUS", "file:" + dir.resolve("rv-ompi")),
                java.util.Map.of("OMPI_COMM_WORLD_RANK", "1", "OMPI_COMM_WORLD_SIZE", "2", "LIMACTL_RENDEZVOUS", "file:" + dir.resolve("rv-ompi")));
        assertEquals(List.of(0, 0), launchRanks(o, concat(common, "--run", ompi.toString())));
        ObjectMapper json = new ObjectMapper();
        List<String> a = Files.readAllLines(one.resolve("metrics.jsonl"));
        for (Path run : List.of(slurm, ompi)) {
            List<String> b = Files.readAllLines(run.resolve("metrics.jsonl"));
            assertEquals(a.size(), b.size(), run.toString());
            double x = json.readTree(a.get(a.size() - 1)).get("loss").asDouble(), y = json.readTree(b.get(b.size() - 1)).get("loss").asDouble();
            assertEquals(x, y, 1e-5 * x, run.toString());
        }
        // torchrun-style variables with MASTER_ADDR:MASTER_PORT: rank 0 hosts the key-value server the ranks meet at
        Path tcp = dir.resolve("tcp");
        String port = Integer.toString(freePort());
        List<java.util.Map<String, String>> t = List.of(
                java.util.Map.of("RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", port),
                java.util.Map.of("RANK", "1", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", port));
        Path tcpLog = dir.resolve("tcp.log");
        assertEquals(List.of(0, 0), launchRanks(t, tcpLog, concat(common, "--run", tcp.toString())), Files.readString(tcpLog));
        assertTrue(Files.notExists(tcp.resolve("rendezvous")), "no rendezvous directory: the ranks met at the server");
        try (java.net.Socket gone = new java.net.Socket()) {  // the server stopped once every rank had met
            gone.connect(new java.net.InetSocketAddress("127.0.0.1", Integer.parseInt(port)), 500);
            org.junit.jupiter.api.Assertions.fail("the rendezvous server still listens on " + port);
        } catch (java.io.IOException expected) {
            // refused
        }
        // rank 0 without redis-server: an error saying so, and rank 1 names rank 0 as missing
        Path noKv = dir.resolve("nokv.log");
        String port2 = Integer.toString(freePort());
        List<Integer> codes = launchRanks(List.of(
                java.util.Map.of("RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", port2, "PATH", "/nonexistent"),
                java.util.Map.of("RANK", "1", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", port2)), noKv,
                concat(concat(common, "--run", dir.resolve("nokv").toString()), "--set", "distributed.timeout_s=3"));
        String noKvLog = Files.readString(noKv);
        assertEquals(List.of(1, 1), codes, noKvLog);
        assertTrue(noKvLog.contains("redis-server is not installed on rank 0's host"), noKvLog);
        assertTrue(noKvLog.contains("no key-value server answered at 127.0.0.1:" + port2), noKvLog);
        // a rank that never comes: the one that did is told which is missing, within the timeout (exit 1: not the input's fault)
        Path log = dir.resolve("lonely.log");
        assertEquals(List.of(1), launchRanks(List.of(java.util.Map.of("RANK", "0", "WORLD_SIZE", "2")), log,
                concat(concat(common, "--run", dir.resolve("lonely").toString()), "--set", "distributed.timeout_s=2")));
        String err = Files.readString(log);
        assertTrue(err.contains("rank(s) 1 of 2 did not arrive within 2000 ms"), err);
    }

    @Test
    void servingBeyondLoopbackWithoutAKeyIsWarnedAbout() {
        Run r = limactl("serve", "-m", dir.resolve("nomodel").toString(), "--host", "0.0.0.0", "--port", "0");
        assertTrue(r.err().contains("warning: serving on 0.0.0.0 without an API key"), r.err());
        assertEquals(ExitCodes.INVALID_INPUT, r.code(), r.err());
        Run local = limactl("serve", "-m", dir.resolve("nomodel").toString(), "--port", "0");
        assertTrue(!local.err().contains("warning"), local.err());
        Run batch = limactl("serve", "-m", dir.resolve("nomodel").toString(), "--max-batch", "0");
        assertEquals(ExitCodes.INVALID_INPUT, batch.code(), batch.err());
    }

    @Test
    void portInUseBatchSizeNotAnIntegerAndHelpTextsAreHandled() throws Exception {
        Path run = dir.resolve("p");
        assertEquals(0, limactl(concat(new String[] {"-q", "demo", "--run", run.toString()}, SMALL)).code());
        try (java.net.ServerSocket taken = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            Run r = limactl("serve", "-m", run.resolve("checkpoints/epoch-02").toString(), "--port", Integer.toString(taken.getLocalPort()));
            assertEquals(ExitCodes.GENERIC, r.code(), r.err());
            assertTrue(r.err().contains("cannot listen on 127.0.0.1:" + taken.getLocalPort()), r.err());
            assertTrue(!r.err().contains("\tat "), r.err());
        }
        Run half = limactl(concat(concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random", "--run",
                dir.resolve("h").toString()}, SMALL), "--set", "training.batch_size=1.5"));
        assertEquals(ExitCodes.INVALID_INPUT, half.code(), half.err());
        assertTrue(half.err().contains("training.batch_size"), half.err());
        for (String cmd : new String[] {"eval", "experiment"}) {
            Run h = limactl("help", cmd);
            assertEquals(0, h.code());
            assertTrue(!h.err().contains("WARN") && !h.out().contains("WARN"), h.err() + h.out());
            assertTrue(h.out().contains("95% CI"), h.out());
        }
    }
}
