package dev.limactl.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ConfigLoaderTest {
    @TempDir Path dir;

    static void expect(String needle, Runnable r) {
        ConfigException e = assertThrows(ConfigException.class, r::run);
        assertTrue(e.getMessage().contains(needle), () -> "\"" + e.getMessage() + "\" lacks \"" + needle + "\"");
    }

    @Test
    void presetsCarryThePapersNumbers() {
        LimaConfig big = ConfigLoader.preset("lima-65b").set(List.of("model.path=/ckpt", "data.train=t.jsonl")).load();
        assertEquals(15, big.training().epochs());
        assertEquals(32, big.training().batchSize());
        assertEquals(1e-5, big.optimizer().lr());
        assertEquals(1e-6, big.optimizer().finalLr());
        assertEquals(0.9, big.optimizer().beta1());
        assertEquals(0.95, big.optimizer().beta2());
        assertEquals(0.1, big.optimizer().weightDecay());
        assertEquals(2048, big.data().maxTokens());
        assertEquals(0.3, big.training().residDropout());
        // the paper names no clipping, no warm-up, a linear decay
        assertEquals(0.0, big.optimizer().gradClip());
        assertEquals("linear", big.optimizer().schedule());
        assertEquals(0, big.optimizer().warmupSteps());
        assertEquals(0.0, big.optimizer().warmupRatio());
        LimaConfig small = ConfigLoader.preset("lima-7b").set(List.of("model.path=/ckpt", "data.train=t.jsonl")).load();
        assertEquals(64, small.training().batchSize());
        assertEquals(0.2, small.training().residDropout());
        assertEquals(0.0, small.optimizer().gradClip());
        LimaConfig demo = ConfigLoader.preset("demo").load();
        assertEquals("random", demo.model().init());
        assertEquals(1.0, demo.optimizer().gradClip());
    }

    @Test
    void huggingFaceNamesAreAliasesAndSchedulesAreChecked() {
        LimaConfig c = ConfigLoader.preset("lima-7b").set(List.of("model.path=/ckpt", "data.train=t.jsonl", "training.num_train_epochs=3",
                "optimizer.learning_rate=2e-5", "optimizer.max_grad_norm=0.5", "optimizer.lr_scheduler_type=cosine",
                "optimizer.warmup_ratio=0.1", "optimizer.adam_beta2=0.999")).load();
        assertEquals(3, c.training().epochs());
        assertEquals(2e-5, c.optimizer().lr());
        assertEquals(0.5, c.optimizer().gradClip());
        assertEquals("cosine", c.optimizer().schedule());
        assertEquals(0.1, c.optimizer().warmupRatio());
        assertEquals(0.999, c.optimizer().beta2());
        for (String bad : List.of("optimizer.schedule=exponential", "optimizer.warmup_steps=-1", "optimizer.warmup_ratio=1.0",
                "optimizer.grad_clip=-1")) {
            ConfigException e = assertThrows(ConfigException.class,
                    () -> ConfigLoader.preset("lima-7b").set(List.of("model.path=/ckpt", "data.train=t.jsonl", bad)).load(), bad);
            assertTrue(e.getMessage().contains(bad.substring(0, bad.indexOf('='))), e.getMessage());
        }
        ConfigException both = assertThrows(ConfigException.class, () -> ConfigLoader.preset("lima-7b")
                .set(List.of("model.path=/ckpt", "data.train=t.jsonl", "optimizer.warmup_steps=5", "optimizer.warmup_ratio=0.1")).load());
        assertTrue(both.getMessage().contains("not both"), both.getMessage());
    }

    @Test
    void fileThenOverridesLayerOverThePreset() throws Exception {
        Path f = dir.resolve("run.yaml");
        Files.writeString(f, "model:\n  path: /models/llama-7b\ndata:\n  train: train.arrow\ntraining:\n  epochs: 10\n");
        LimaConfig c = ConfigLoader.preset("lima-7b").file(f).set(List.of("optimizer.lr=2e-5", "training.seed=7")).load();
        assertEquals("/models/llama-7b", c.model().path());
        assertEquals(10, c.training().epochs());
        assertEquals(2e-5, c.optimizer().lr());
        assertEquals(7, c.training().seed());
        assertEquals(64, c.training().batchSize());
        Path json = dir.resolve("run.json");
        Files.writeString(json, "{\"data\": {\"train\": \"x.jsonl\"}, \"model\": {\"path\": \"/m\"}}");
        assertEquals("x.jsonl", ConfigLoader.preset(null).file(json).load().data().train());
    }

    @Test
    void unknownKeysAreErrorsNamingTheKey() throws Exception {
        Path f = dir.resolve("bad.yaml");
        Files.writeString(f, "optimizer:\n  lrr: 1e-5\n");
        expect("bad.yaml: unknown key \"optimizer.lrr\" (known here: lr, final_lr", () -> ConfigLoader.preset(null).file(f));
        expect("unknown key \"trainig\"", () -> ConfigLoader.preset(null).set(List.of("trainig.epochs=3")));
        expect("unknown preset \"lima-13b\"", () -> ConfigLoader.preset("lima-13b"));
    }

    @Test
    void badValuesAreErrorsNamingTheKey() throws Exception {
        ConfigLoader base = ConfigLoader.preset("demo");
        expect("config key \"training.batch_size\" must be > 0, got 0", () -> ConfigLoader.preset("demo").set(List.of("training.batch_size=0")).load());
        expect("config key \"optimizer.final_lr\" must be in [0, lr]", () -> ConfigLoader.preset("demo").set(List.of("optimizer.final_lr=1")).load());
        expect("config key \"training.resid_dropout\"", () -> ConfigLoader.preset("demo").set(List.of("training.resid_dropout=1.5")).load());
        expect("config key \"training.device\"", () -> ConfigLoader.preset("demo").set(List.of("training.device=gpu0")).load());
        assertEquals("cuda:1", ConfigLoader.preset("demo").set(List.of("training.device=cuda:1")).load().training().device());
        expect("config key \"training.epochs\"", () -> ConfigLoader.preset("demo").set(List.of("training.epochs=many")).load());
        // the communicator follows the device: auto, or the backend that fits it
        assertEquals("auto", ConfigLoader.preset("demo").load().distributed().backend());
        expect("config key \"distributed.backend\" must be auto, gloo (CPU ranks) or nccl (CUDA ranks), got \"mpi\"",
                () -> ConfigLoader.preset("demo").set(List.of("distributed.backend=mpi")).load());
        expect("config key \"distributed.backend\" nccl is for CUDA ranks; training.device is cpu",
                () -> ConfigLoader.preset("demo").set(List.of("distributed.backend=nccl")).load());
        expect("config key \"distributed.backend\" gloo is for CPU ranks; CUDA ranks (training.device cuda:1) communicate over nccl",
                () -> ConfigLoader.preset("demo").set(List.of("distributed.backend=gloo", "training.device=cuda:1")).load());
        assertEquals("nccl", ConfigLoader.preset("demo").set(List.of("distributed.backend=nccl", "training.device=cuda")).load()
                .distributed().backend());
        expect("config key \"model.path\" is required", () -> ConfigLoader.preset("lima-7b").set(List.of("data.train=x")).load());
        expect("\"optimizer\" must be a mapping", () -> ConfigLoader.preset(null).set(List.of("optimizer=3")));
        Path broken = dir.resolve("broken.yaml");
        Files.writeString(broken, "model: [unclosed\n");
        expect("broken.yaml: not valid YAML/JSON", () -> ConfigLoader.preset(null).file(broken));
        expect("does not exist", () -> ConfigLoader.preset(null).file(dir.resolve("none.yaml")));
        assertTrue(base.toYaml().contains("resid_dropout"));
    }
}
