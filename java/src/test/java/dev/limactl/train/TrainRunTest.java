package dev.limactl.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.chat.ChatFormat;
import dev.limactl.config.ConfigLoader;
import dev.limactl.engine.Model;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TrainRunTest {
    @TempDir Path dir;

    /** The demo preset made smaller: 2 epochs of 48 examples in batches of 16 -> 6 steps. */
    static ConfigLoader small(String... extra) {
        List<String> sets = new ArrayList<>(List.of("model.architecture.hidden_size=32", "model.architecture.intermediate_size=64",
                "model.architecture.num_layers=2", "model.architecture.num_heads=4", "model.architecture.num_kv_heads=2",
                "data.max_tokens=160", "training.epochs=2", "training.batch_size=16", "training.micro_batch_tokens=1024",
                "training.resid_dropout=0.2", "training.threads=2"));
        sets.addAll(List.of(extra));
        return ConfigLoader.preset("demo").set(sets);
    }

    static List<Double> losses(Path run) throws Exception {
        List<Double> out = new ArrayList<>();
        for (String line : Files.readAllLines(run.resolve("metrics.jsonl"))) out.add(new ObjectMapper().readTree(line).get("loss").asDouble());
        return out;
    }

    @Test
    void lrDecaysLinearlyWithoutWarmup() {
        LrSchedule s = new LrSchedule(1e-5, 1e-6, 11);
        assertEquals(1e-5, s.at(0), 1e-18);
        assertEquals(5.5e-6, s.at(5), 1e-18);
        assertEquals(1e-6, s.at(10), 1e-18);
        assertEquals(1e-5, new LrSchedule(1e-5, 1e-6, 1).at(0));
    }

    @Test
    void warmUpAndCosineAndConstantSchedulesForOtherRecipes() {
        // Hugging Face's linear warm-up: lr * step / W (0 at the first step), then the decay over the rest
        LrSchedule w = new LrSchedule(1e-4, 0, 14, "linear", 4);
        assertEquals(0.0, w.at(0), 1e-18);
        assertEquals(0.5e-4, w.at(2), 1e-18);
        assertEquals(1e-4, w.at(4), 1e-18);
        assertEquals(1e-4 * (1 - 4.0 / 9), w.at(8), 1e-18);  // 4 of the 9 decay steps done
        assertEquals(0.0, w.at(13), 1e-18);
        LrSchedule c = new LrSchedule(1e-4, 1e-5, 11, "cosine", 0);
        assertEquals(1e-4, c.at(0), 1e-18);
        assertEquals(1e-5 + 0.9e-4 * 0.5, c.at(5), 1e-15);  // cos(pi/2) = 0: half-way between
        assertEquals(1e-5, c.at(10), 1e-18);
        assertTrue(c.at(2) > new LrSchedule(1e-4, 1e-5, 11).at(2), "cosine stays higher early on");
        LrSchedule k = new LrSchedule(3e-4, 0, 10, "constant", 2);
        assertEquals(1.5e-4, k.at(1), 1e-18);
        assertEquals(3e-4, k.at(9), 1e-18);
        assertEquals(3, LrSchedule.warmup(0, 0.03, 100));  // ceil(0.03 * 100)
        assertEquals(5, LrSchedule.warmup(5, 0, 100));
        assertThrows(dev.limactl.config.ConfigException.class, () -> LrSchedule.warmup(100, 0, 100));
        assertThrows(IllegalArgumentException.class, () -> new LrSchedule(1e-4, 0, 10, "step", 0));
    }

    @Test
    void packingKeepsEveryTokenAndTargetInRowsOfTheLongestExample() {
        List<ChatFormat.Encoded> ex = new ArrayList<>();
        int[] lens = {10, 3, 4, 7, 2, 9};
        for (int len : lens) {
            int[] t = new int[len];
            byte[] m = new byte[len];
            for (int i = 0; i < len; i++) {
                t[i] = 100 + len;
                m[i] = (byte) (i >= len / 2 ? 1 : 0);
            }
            ex.add(new ChatFormat.Encoded(t, m, 0));
        }
        List<MicroBatch> mbs = MicroBatch.pack(ex, 20);  // rows of 10 -> 2 rows per micro-batch
        int rows = 0;
        long tokens = 0, targets = 0;
        for (MicroBatch mb : mbs) {
            assertEquals(10, mb.seqLen());
            assertTrue(mb.rows() <= 2);
            rows += mb.rows();
            for (int i = 0; i < mb.tokens().length; i++) if (mb.segments()[i] != 0) tokens++;
            targets += mb.targets();
        }
        assertEquals(4, rows);  // 35 tokens in rows of 10: [10] [3 4 2] [7] [9], first-fit
        assertEquals(35, tokens);
        assertEquals(ex.stream().mapToLong(ChatFormat.Encoded::targets).sum(), targets);
    }

    @Test
    void resumedRunReproducesTheUninterruptedRunExactly() throws Exception {
        Path a = dir.resolve("a"), b = dir.resolve("b");
        TrainRun.Result ra = TrainRun.create(small(), a).run(new TrainListener() {});
        assertTrue(ra.completed());
        assertEquals(6, ra.steps());
        assertEquals(2, ra.checkpoints().size());
        TrainRun rb = TrainRun.create(small(), b);
        TrainRun.Result partial = rb.run(new TrainListener() {
            @Override
            public void onStep(TrainRun.StepMetrics m) {
                if (m.step() == 2) rb.requestStop();  // mid-epoch, as Ctrl-C does
            }
        });
        assertFalse(partial.completed());
        assertEquals(2, partial.steps());
        assertTrue(Files.exists(b.resolve("state/optimizer.safetensors")));
        // as a kill -9 leaves them: a save's temporary beside the state, a metrics line cut in the middle
        Path stale = b.resolve("state/model/model.safetensors.tmp-4242");
        Files.writeString(stale, "half a safetensors file");
        Files.writeString(b.resolve("metrics.jsonl"), "{\"step\": 3, \"epo", java.nio.file.StandardOpenOption.APPEND);
        TrainRun.Result rest = TrainRun.resume(b).run(new TrainListener() {});
        assertFalse(Files.exists(stale), "stale temporaries are removed on resume");
        assertTrue(rest.completed());
        List<Double> la = losses(a), lb = losses(b);
        assertEquals(6, la.size());
        assertEquals(la, lb);  // bitwise: same data order, dropout masks, fp32 weights and moments
        assertTrue(la.get(5) < la.get(0), "the loss goes down: " + la);
        try (Model ma = Model.load(a.resolve("checkpoints/epoch-02")); Model mb = Model.load(b.resolve("checkpoints/epoch-02"))) {
            assertArrayEquals(ma.readTensor("lm_head.weight"), mb.readTensor("lm_head.weight"));
        }
    }

    @Test
    void checkpointsAreHuggingFaceDirectoriesWithTokenizerAndEot() throws Exception {
        Path run = dir.resolve("run");
        TrainRun.create(small("training.epochs=1"), run).run(new TrainListener() {});
        Path ck = run.resolve("checkpoints/epoch-01");
        for (String f : List.of("config.json", "model.safetensors", "tokenizer.model", "limactl.json")) {
            assertTrue(Files.exists(ck.resolve(f)), f);
        }
        JsonNode meta = new ObjectMapper().readTree(ck.resolve("limactl.json").toFile());
        assertEquals(1024, meta.get("eot_token_id").asInt());  // the demo tokenizer has 1,024 pieces: EOT is new
        try (Model m = Model.load(ck)) {
            assertEquals(1025, m.config().vocabSize());
        }
        JsonNode first = new ObjectMapper().readTree(Files.readAllLines(run.resolve("metrics.jsonl")).get(0));
        for (String k : List.of("step", "epoch", "lr", "loss", "grad_norm", "tokens_per_s")) assertTrue(first.has(k), k);
        assertEquals(5e-3, first.get("lr").asDouble(), 1e-12);
    }

    /**
     * The dev perplexity of each epoch is on the epoch's last metrics line and in its checkpoint's
     * limactl.json; the TensorBoard event files, read back with TensorBoard's own reader, hold the same
     * loss, lr and perplexity at the same steps.
     */
    @Test
    void devPerplexityPerEpochAndTensorBoardEventsFollowTheRun() throws Exception {
        Path run = dir.resolve("tb");
        TrainRun.create(small(), run).run(new TrainListener() {});
        List<JsonNode> lines = new ArrayList<>();
        for (String l : Files.readAllLines(run.resolve("metrics.jsonl"))) lines.add(new ObjectMapper().readTree(l));
        assertEquals(6, lines.size());
        List<Long> pplSteps = new ArrayList<>();
        for (JsonNode n : lines) if (n.has("dev_perplexity")) pplSteps.add(n.get("step").asLong());
        assertEquals(List.of(3L, 6L), pplSteps, "the dev perplexity belongs on each epoch's last step");
        for (int e = 1; e <= 2; e++) {
            JsonNode meta = new ObjectMapper().readTree(run.resolve(String.format("checkpoints/epoch-%02d/limactl.json", e)).toFile());
            double ppl = lines.get(3 * e - 1).get("dev_perplexity").asDouble();
            assertTrue(ppl > 1 && ppl < 2000, "implausible perplexity " + ppl);
            assertEquals(ppl, meta.get("dev_perplexity").asDouble(), 0.0);
        }
        Process probe = new ProcessBuilder("python3", "-c", "import tensorboard").redirectErrorStream(true).start();
        boolean ok = probe.waitFor(60, java.util.concurrent.TimeUnit.SECONDS) && probe.exitValue() == 0;
        org.junit.jupiter.api.Assumptions.assumeTrue(ok, "python3 with tensorboard is not installed: the event-file cross-check is skipped");
        Path script = dir.resolve("read_tb.py");
        Files.writeString(script, String.join("\n",
                "import json, sys",
                "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator",
                "ea = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0})",
                "ea.Reload()",
                "print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))", ""));
        Process p = new ProcessBuilder("python3", script.toString(), run.resolve("tensorboard").toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, java.util.concurrent.TimeUnit.SECONDS) && p.exitValue() == 0, out);
        JsonNode tb = new ObjectMapper().readTree(out.lines().reduce((a, b) -> b).orElseThrow());
        for (String[] k : new String[][] {{"train/loss", "loss"}, {"train/lr", "lr"}, {"train/grad_norm", "grad_norm"}}) {
            JsonNode series = tb.get(k[0]);
            assertEquals(6, series.size(), k[0] + ": " + tb);
            for (int i = 0; i < 6; i++) {
                assertEquals(lines.get(i).get("step").asLong(), series.get(i).get(0).asLong());
                assertEquals((float) lines.get(i).get(k[1]).asDouble(), (float) series.get(i).get(1).asDouble(), 0.0f, k[0]);
            }
        }
        JsonNode ppl = tb.get("dev/perplexity");
        assertEquals(2, ppl.size());
        assertEquals(6, ppl.get(1).get(0).asLong());
        assertEquals((float) lines.get(5).get("dev_perplexity").asDouble(), (float) ppl.get(1).get(1).asDouble(), 0.0f);
    }

    @Test
    void runDirectoryStatesAreChecked() {
        Path run = dir.resolve("r");
        TrainRun.create(small("training.epochs=1"), run).run(new TrainListener() {});
        RunStateException e = assertThrows(RunStateException.class, () -> TrainRun.create(small(), run));
        assertTrue(e.getMessage().contains("already holds a run; pass --resume"), e.getMessage());
        e = assertThrows(RunStateException.class, () -> TrainRun.resume(dir.resolve("none")));
        assertTrue(e.getMessage().contains("nothing to resume"), e.getMessage());
    }

    @Test
    void examplesWithoutResponseTokensAfterTrimmingAreReported() {
        List<String> warnings = new ArrayList<>();
        TrainRun.create(small("training.epochs=1", "data.max_tokens=24"), dir.resolve("w")).run(new TrainListener() {
            @Override
            public void onWarning(String message) {
                warnings.add(message);
            }
        });
        assertEquals(1, warnings.size());
        assertTrue(warnings.get(0).contains("have no response tokens left after trimming to 24 tokens"), warnings.get(0));
    }

    @Test
    void aCrashBeforeAnyEpochEndsStillResumesAndAFailedStartLeavesNoHalfRun() throws Exception {
        Path a = dir.resolve("a"), b = dir.resolve("b");
        TrainRun.create(small("training.epochs=1"), a).run(new TrainListener() {});
        TrainRun rb = TrainRun.create(small("training.epochs=1"), b);
        // a crash (as a kill -9 would be) at step 2, with no Ctrl-C save: the state from the start is there
        assertThrows(IllegalStateException.class, () -> rb.run(new TrainListener() {
            @Override
            public void onStep(TrainRun.StepMetrics m) {
                if (m.step() == 2) throw new IllegalStateException("killed");
            }
        }));
        assertTrue(Files.exists(b.resolve("state/trainer.json")));
        assertTrue(TrainRun.resume(b).run(new TrainListener() {}).completed());
        assertEquals(losses(a), losses(b));  // the crashed steps redone exactly
        // a start that fails (nothing trainable) leaves no config behind: the same command can run again
        Path c = dir.resolve("c");
        assertThrows(RuntimeException.class, () -> TrainRun.create(small("training.epochs=1", "data.max_tokens=2"), c)
                .run(new TrainListener() {}));
        assertFalse(Files.exists(c.resolve("config.yaml")));
        assertFalse(Files.exists(c), "a failed start leaves no run directory");
        assertTrue(TrainRun.create(small("training.epochs=1"), c).run(new TrainListener() {}).completed());
    }

    @Test
    void examplesLongerThanTheModelsContextAreTrimmedToItWithOneWarning() {
        List<String> warnings = new ArrayList<>();
        TrainRun.Result r = TrainRun.create(small("training.epochs=1", "model.architecture.max_position_embeddings=48"), dir.resolve("t"))
                .run(new TrainListener() {
                    @Override
                    public void onWarning(String message) {
                        warnings.add(message);
                    }
                });
        assertTrue(r.completed());
        assertEquals(1, warnings.stream().filter(w -> w.contains("the model's context is 48 tokens")).count(), warnings.toString());
    }
}
