package dev.limactl.cli;

import static dev.limactl.cli.CliTest.concat;
import static dev.limactl.cli.CliTest.limactl;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.config.ConfigLoader;
import dev.limactl.engine.Batch;
import dev.limactl.generate.ModelDir;
import dev.limactl.train.TrainListener;
import dev.limactl.train.TrainRun;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** LoRA runs end to end: PEFT-format adapters per epoch, served unmerged or merged, read by PEFT itself, resumed exactly. */
class LoraTest {
    @TempDir Path dir;

    static final String[] LORA = concat(CliTest.SMALL, "--set", "adapter.type=lora", "--set", "adapter.r=4", "--set", "optimizer.lr=1e-2",
            "--set", "optimizer.final_lr=1e-3");

    static JsonNode json(String s) throws Exception {
        return new ObjectMapper().readTree(s);
    }

    @Test
    void aLoraRunWritesPeftAdaptersThatServeUnmergedAndMergeToTheSameModel() throws Exception {
        Path run = dir.resolve("lora");
        CliTest.Run t = limactl(concat(new String[] {"train", "--run", run.toString(), "--preset", "demo"}, LORA));
        assertEquals(0, t.code(), t.err());
        assertTrue(t.err().contains("LoRA adapter parameters over"), t.err());
        Path ck = run.resolve("checkpoints/epoch-02");
        for (String f : List.of("adapter_config.json", "adapter_model.safetensors", "tokenizer.model", "limactl.json")) {
            assertTrue(Files.exists(ck.resolve(f)), f);
        }
        assertFalse(Files.exists(ck.resolve("model.safetensors")), "an adapter checkpoint holds no copy of the base");
        JsonNode cfg = new ObjectMapper().readTree(ck.resolve("adapter_config.json").toFile());
        assertEquals("LORA", cfg.get("peft_type").asText());
        assertEquals(4, cfg.get("r").asInt());
        assertEquals(run.resolve("base").toAbsolutePath().toString(), cfg.get("base_model_name_or_path").asText());
        assertEquals("[1024]", cfg.get("trainable_token_indices").path("lm_head").toString(), cfg.toString());

        // The adapter checkpoint alone, the base + --adapter, and the merged checkpoint score the same.
        String dev = run.resolve("embedded/demo/dev.jsonl").toString();
        CliTest.Run a = limactl("perplexity", "--json", "-m", ck.toString(), "-d", dev);
        CliTest.Run b = limactl("perplexity", "--json", "-m", run.resolve("base").toString(), "--adapter", ck.toString(), "-d", dev);
        CliTest.Run plain = limactl("perplexity", "--json", "-m", run.resolve("base").toString(), "-d", dev);
        assertEquals(0, a.code(), a.err());
        assertEquals(0, b.code(), b.err());
        double ppl = json(a.out()).get("perplexity").asDouble();
        assertEquals(ppl, json(b.out()).get("perplexity").asDouble());
        assertTrue(Math.abs(json(plain.out()).get("perplexity").asDouble() - ppl) > 1e-3 * ppl, "the adapter changes the model");
        Path merged = dir.resolve("merged");
        CliTest.Run m = limactl("merge", "--adapter", ck.toString(), "--out", merged.toString(), "--dtype", "f32");
        assertEquals(0, m.code(), m.err());
        for (String f : List.of("config.json", "model.safetensors", "tokenizer.model", "limactl.json")) {
            assertTrue(Files.exists(merged.resolve(f)), f);
        }
        CliTest.Run c = limactl("perplexity", "--json", "-m", merged.toString(), "-d", dev);
        assertEquals(ppl, json(c.out()).get("perplexity").asDouble(), 1e-4 * ppl);
        CliTest.Run g = limactl("-q", "generate", "-m", run.resolve("base").toString(), "--adapter", ck.toString(), "--prompts", dev,
                "--out", dir.resolve("answers.jsonl").toString(), "--max-new-tokens", "4");
        assertEquals(0, g.code(), g.err());
        assertEquals(6, Files.readAllLines(dir.resolve("answers.jsonl")).size());

        // Bad input: exit 2, nothing written over.
        long before = Files.getLastModifiedTime(merged.resolve("model.safetensors")).toMillis();
        CliTest.Run again = limactl("merge", "--adapter", ck.toString(), "--out", merged.toString());
        assertEquals(ExitCodes.INVALID_INPUT, again.code(), again.err());
        assertTrue(again.err().contains("exists and is not an empty directory"), again.err());
        assertEquals(before, Files.getLastModifiedTime(merged.resolve("model.safetensors")).toMillis());
        CliTest.Run notAdapter = limactl("merge", "--adapter", merged.toString(), "--out", dir.resolve("m2").toString());
        assertEquals(ExitCodes.INVALID_INPUT, notAdapter.code(), notAdapter.err());
        assertTrue(notAdapter.err().contains("not a LoRA adapter"), notAdapter.err());
        CliTest.Run noDir = limactl("perplexity", "-m", merged.toString(), "--adapter", dir.resolve("none").toString(), "-d", dev);
        assertEquals(ExitCodes.INVALID_INPUT, noDir.code(), noDir.err());
        assertTrue(noDir.err().contains("does not exist"), noDir.err());

        peftReadsWhatLimactlWrote(run.resolve("base"), ck, merged);
    }

    /** PEFT (Python) loads the adapter over the base and gives limactl's logits; so does transformers on the merge. */
    private void peftReadsWhatLimactlWrote(Path base, Path ck, Path merged) throws Exception {
        Path script = Path.of("../cpp/tests/golden/check_peft_adapter.py").toAbsolutePath().normalize();
        CliTest.assumePython("torch, transformers, peft", "the PEFT cross-check is skipped");
        int[] ids = {1, 50, 300, 1024, 77, 5, 1024, 9};
        float[] logits;
        try (ModelDir md = new ModelDir(ck, null, 2048); Batch b = new Batch(1, ids.length)) {
            b.set(ids, null, null);
            logits = md.model.logits(b);
        }
        Path expected = dir.resolve("expected.json");
        var node = new ObjectMapper().createObjectNode();
        var idsNode = node.putArray("ids");
        for (int id : ids) idsNode.add(id);
        var lg = node.putArray("logits");
        for (float f : logits) lg.add(f);
        Files.writeString(expected, node.toString());
        CliTest.python(script.toString(), base.toString(), ck.toString(), expected.toString(), merged.toString());
    }

    /** The EOT rows are what lets a LoRA-tuned model stop: with them trained it ends its answers, without them it never does. */
    @Test
    void trainingTheEotRowsIsWhatLetsTheModelStop() throws Exception {
        Path data = CliTest.yesData(dir);
        for (boolean trainEot : new boolean[] {true, false}) {
            Path run = dir.resolve("eot-" + trainEot);
            CliTest.Run t = limactl("-q", "train", "--run", run.toString(), "--preset", "demo", "--data", data.toString(), "--set",
                    "adapter.type=lora", "--set", "adapter.train_eot=" + trainEot, "--set", "training.epochs=40", "--set",
                    "optimizer.lr=3e-2", "--set", "optimizer.final_lr=3e-3", "--set", "training.batch_size=8", "--set",
                    "adapter.dropout=0", "--set", "training.resid_dropout=0");
            assertEquals(0, t.code(), t.err());
            Path out = run.resolve("answers.jsonl");
            CliTest.Run g = limactl("-q", "generate", "-m", run.resolve("checkpoints/epoch-40").toString(), "--prompts", data.toString(),
                    "--out", out.toString(), "--temperature", "0", "--max-new-tokens", "16");
            assertEquals(0, g.code(), g.err());
            long stopped = Files.readAllLines(out).stream().filter(l -> l.contains("\"finish\":\"eot\"")).count();
            if (trainEot) assertEquals(16, stopped, "every answer ends with EOT: " + Files.readString(out));
            else assertEquals(0, stopped, "an untrained EOT row is never chosen: " + Files.readString(out));
            JsonNode cfg = new ObjectMapper().readTree(run.resolve("checkpoints/epoch-40/adapter_config.json").toFile());
            assertEquals(trainEot, !cfg.get("trainable_token_indices").isNull(), cfg.toString());
        }
    }

    /** A LoRA (and a QLoRA) run stopped mid-epoch and resumed ends with the same adapter, bit for bit, as one that ran through. */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"lora", "qlora"})
    void aStoppedAdapterRunResumesExactly(String type) throws Exception {
        List<String> sets = List.of("model.architecture.hidden_size=32", "model.architecture.intermediate_size=64",
                "model.architecture.num_layers=2", "data.max_tokens=128", "training.epochs=2", "training.batch_size=16", "adapter.type=" + type,
                "adapter.r=4", "optimizer.lr=1e-2");
        Path whole = dir.resolve("whole"), split = dir.resolve("split");
        assertTrue(TrainRun.create(ConfigLoader.preset("demo").set(sets), whole).run(new TrainListener() {}).completed());
        TrainRun first = TrainRun.create(ConfigLoader.preset("demo").set(sets), split);
        TrainRun.Result r = first.run(new TrainListener() {
            @Override
            public void onStep(TrainRun.StepMetrics m) {
                if (m.step() == 4) first.requestStop();
            }
        });
        assertFalse(r.completed());
        assertTrue(Files.exists(split.resolve("state/adapter/adapter_model.safetensors")));
        assertTrue(TrainRun.resume(split).run(new TrainListener() {}).completed());
        for (String f : List.of("checkpoints/epoch-01/adapter_model.safetensors", "checkpoints/epoch-02/adapter_model.safetensors")) {
            assertArrayEquals(Files.readAllBytes(whole.resolve(f)), Files.readAllBytes(split.resolve(f)), f);
        }
    }

    /** QLoRA trains over the NF4 base: its adapter is a PEFT adapter like LoRA's, and scores close to LoRA's. */
    @Test
    void aQloraRunTrainsOverNf4AndItsAdapterServesOverTheFullPrecisionBase() throws Exception {
        Path lora = dir.resolve("lora"), qlora = dir.resolve("qlora");
        assertEquals(0, limactl(concat(new String[] {"-q", "train", "--run", lora.toString(), "--preset", "demo"}, LORA)).code());
        CliTest.Run q = limactl(concat(new String[] {"-q", "train", "--run", qlora.toString(), "--preset", "demo"},
                concat(LORA, "--set", "adapter.type=qlora")));
        assertEquals(0, q.code(), q.err());
        Path ck = qlora.resolve("checkpoints/epoch-02");
        assertTrue(Files.exists(ck.resolve("adapter_model.safetensors")));
        assertEquals(Files.size(lora.resolve("base/model.safetensors")), Files.size(qlora.resolve("base/model.safetensors")),
                "the base is saved in full precision (fp32), before quantising");
        String dev = lora.resolve("embedded/demo/dev.jsonl").toString();
        double pl = json(limactl("perplexity", "--json", "-m", lora.resolve("checkpoints/epoch-02").toString(), "-d", dev).out())
                .get("perplexity").asDouble();
        double pq = json(limactl("perplexity", "--json", "-m", ck.toString(), "-d", dev).out()).get("perplexity").asDouble();
        assertTrue(pq != pl && Math.abs(pq - pl) < 0.05 * pl, "QLoRA " + pq + " vs LoRA " + pl);
        var lossL = Files.readAllLines(lora.resolve("metrics.jsonl")).get(0);
        var lossQ = Files.readAllLines(qlora.resolve("metrics.jsonl")).get(0);
        double l0 = json(lossL).get("loss").asDouble(), q0 = json(lossQ).get("loss").asDouble();
        assertTrue(l0 != q0 && Math.abs(l0 - q0) < 0.05 * l0, "the first step's loss over NF4 weights is close to, not equal to, LoRA's");
    }

    /** Data parallelism over an adapter: two local ranks (Gloo, ZeRO-1 over the adapter's state) train as one process does. */
    @Test
    void twoRanksTrainAnAdapterAsOneProcessDoes() throws Exception {
        Path one = dir.resolve("one"), two = dir.resolve("two");
        String[] common = concat(new String[] {"-q", "train", "--preset", "demo"}, LORA);
        assertEquals(0, limactl(concat(common, "--run", one.toString())).code());
        CliTest.Run r = limactl(concat(common, "--run", two.toString(), "--nproc-per-node", "2"));
        assertEquals(0, r.code(), r.err());
        List<String> a = Files.readAllLines(one.resolve("metrics.jsonl")), b = Files.readAllLines(two.resolve("metrics.jsonl"));
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            double x = json(a.get(i)).get("loss").asDouble(), y = json(b.get(i)).get("loss").asDouble();
            assertEquals(x, y, 1e-5 * x, "loss of step " + (i + 1));
        }
        assertTrue(Files.exists(two.resolve("state/optimizer-rank1-of2.safetensors")));
        assertTrue(Files.exists(two.resolve("checkpoints/epoch-02/adapter_model.safetensors")));
    }

    @Test
    void badAdapterSettingsAreInputErrorsNamingTheKey() {
        record Case(String set, String says) {}
        for (Case c : List.of(new Case("adapter.type=dora", "\"adapter.type\""), new Case("adapter.targets=q_proj,wq", "\"adapter.targets\""),
                new Case("adapter.r=0", "\"adapter.r\""), new Case("adapter.dropout=1", "\"adapter.dropout\""))) {
            CliTest.Run r = limactl("train", "--run", dir.resolve("bad").toString(), "--preset", "demo", "--set", "adapter.type=lora", "--set",
                    c.set());
            assertEquals(ExitCodes.INVALID_INPUT, r.code(), c.set() + ": " + r.err());
            assertTrue(r.err().contains(c.says()), c.set() + ": " + r.err());
            assertFalse(Files.exists(dir.resolve("bad")), "nothing is written for a rejected config");
        }
        // LoRA and QLoRA run on CUDA too: the config passes (without a GPU the device is what is refused)
        for (String type : List.of("lora", "qlora")) {
            CliTest.Run cuda = limactl("-q", "train", "--run", dir.resolve(type + "-cuda").toString(), "--preset", "demo", "--set",
                    "adapter.type=" + type, "--set", "training.device=cuda", "--set", "training.epochs=1");
            if (cuda.code() != 0) assertFalse(cuda.err().contains("adapter.type"), cuda.err());
        }
    }
}
