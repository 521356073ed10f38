package dev.limactl.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.chat.ChatFormat;
import dev.limactl.config.ConfigException;
import dev.limactl.config.ConfigLoader;
import dev.limactl.config.LimaConfig;
import dev.limactl.data.AtomicFiles;
import dev.limactl.data.Example;
import dev.limactl.data.ExampleFiles;
import dev.limactl.engine.Batch;
import dev.limactl.engine.Dtype;
import dev.limactl.engine.Lima;
import dev.limactl.engine.Model;
import dev.limactl.engine.ModelConfig;
import dev.limactl.engine.TrainOptions;
import dev.limactl.engine.Trainer;
import dev.limactl.tokenizer.Tokenizer;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

/**
 * One fine-tuning run with the LIMA recipe, in a run directory:
 * <pre>
 *   config.yaml                 the resolved configuration (a resume reads it back)
 *   metrics.jsonl               one line per optimiser step
 *   checkpoints/epoch-NN/       Hugging Face checkpoint + tokenizer + limactl.json, one per epoch
 *   state/                      resumable state: fp32 model, optimiser moments, position in the data
 * </pre>
 * The data order of epoch e is a pure function of (seed, e), dropout masks of (seed, step, ...), and
 * the state holds the exact fp32 weights and moments, so a resumed run reproduces an uninterrupted one.
 */
public final class TrainRun {
    public static final String CHAT_FORMAT = "lima-eot-1";
    private static final ObjectMapper JSON = new ObjectMapper();

    public record Plan(int examples, int stepsPerEpoch, int epochs, long totalSteps, int trimmedExamples,
                       long trimmedTokens, int droppedEmpty, long numParams, int eotId, long startStep) {}

    public record StepMetrics(long step, int epoch, int stepInEpoch, double lr, double loss, long targets,
                              double gradNorm, boolean clipped, long tokens, double tokensPerSec, double elapsedSec) {}

    public record Result(boolean completed, long steps, List<Path> checkpoints, List<Double> epochLosses, Path runDir) {}

    private final LimaConfig cfg;
    private final String configYaml;
    private final Path runDir;
    private final boolean resume;
    private final AtomicBoolean stop = new AtomicBoolean();
    private final CountDownLatch finished = new CountDownLatch(1);
    private final AtomicBoolean started = new AtomicBoolean();

    private TrainRun(LimaConfig cfg, String configYaml, Path runDir, boolean resume) {
        this.cfg = cfg;
        this.configYaml = configYaml;
        this.runDir = runDir;
        this.resume = resume;
    }

    /** A new run of the given configuration in runDir (which must not already hold a run). */
    public static TrainRun create(ConfigLoader config, Path runDir) {
        if (Files.exists(runDir.resolve("config.yaml"))) {
            throw new RunStateException("run directory " + runDir + " already holds a run; pass --resume to continue it"
                    + " or choose another run directory");
        }
        return new TrainRun(config.load(), config.toYaml(), runDir, false);
    }

    /** Continues the run in runDir from its last saved state, with the run's own config.yaml. */
    public static TrainRun resume(Path runDir) {
        Path yaml = runDir.resolve("config.yaml");
        if (!Files.exists(yaml)) throw new RunStateException("nothing to resume: " + runDir + " has no config.yaml");
        if (stateDir(runDir) == null) {
            throw new RunStateException("nothing to resume: " + runDir + " has no saved state yet (the run stopped before its first save)");
        }
        ConfigLoader l = ConfigLoader.preset(null).file(yaml);
        return new TrainRun(l.load(), l.toYaml(), runDir, true);
    }

    /** Asks the run to stop after the current optimiser step and save a resumable state (Ctrl-C). */
    public void requestStop() {
        stop.set(true);
    }

    /** Waits until run() has returned (for a shutdown hook). False if it is still running after the timeout. */
    public boolean awaitFinished(long timeout, TimeUnit unit) throws InterruptedException {
        return !started.get() || finished.await(timeout, unit);
    }

    public Path runDir() {
        return runDir;
    }

    public Result run(TrainListener listener) {
        started.set(true);
        try {
            return doRun(listener);
        } finally {
            finished.countDown();
        }
    }

    private Result doRun(TrainListener listener) {
        LimaConfig.Training tc = cfg.training();
        if (tc.threads() > 0) Lima.setThreads(tc.threads());
        checkFiles();
        mkdirs(runDir);
        if (!resume) write(runDir.resolve("config.yaml"), configYaml);
        Path tokPath = resolve(cfg.model().tokenizer().isBlank() ? cfg.model().path() : cfg.model().tokenizer());
        try (Tokenizer tok = Tokenizer.open(tokPath)) {
            Path state = resume ? stateDir(runDir) : null;
            JsonNode pos = state == null ? null : readJson(state.resolve("trainer.json"));
            try (Model model = openModel(tok, state)) {
                int eot = eotId(model, tok, state);
                ChatFormat format = new ChatFormat(tok, eot, cfg.data().maxTokens());
                List<ChatFormat.Encoded> train = new ArrayList<>();
                int trimmedEx = 0, dropped = 0;
                long trimmedTok = 0;
                List<String> droppedIds = new ArrayList<>();
                for (Example e : ExampleFiles.read(resolve(cfg.data().train()), "train")) {
                    ChatFormat.Encoded enc = format.encode(e.turns());
                    if (enc.trimmed() > 0) {
                        trimmedEx++;
                        trimmedTok += enc.trimmed();
                    }
                    if (enc.targets() == 0) {
                        dropped++;
                        if (droppedIds.size() < 5) droppedIds.add(e.id());
                        continue;
                    }
                    train.add(enc);
                }
                if (dropped > 0) {
                    listener.onWarning(dropped + " example(s) have no response tokens left after trimming to "
                            + cfg.data().maxTokens() + " tokens and are skipped: " + String.join(", ", droppedIds)
                            + (dropped > droppedIds.size() ? ", ..." : ""));
                }
                if (train.isEmpty()) throw new RunStateException("no trainable examples in " + cfg.data().train());
                List<Example> dev = cfg.data().dev().isBlank() ? List.of() : ExampleFiles.read(resolve(cfg.data().dev()), "dev");
                int stepsPerEpoch = (train.size() + tc.batchSize() - 1) / tc.batchSize();
                long total = (long) stepsPerEpoch * tc.epochs();
                LrSchedule lr = new LrSchedule(cfg.optimizer().lr(), cfg.optimizer().finalLr(), total);
                int startEpoch = pos == null ? 1 : pos.get("epoch").asInt();
                int startStep = pos == null ? 0 : pos.get("step_in_epoch").asInt();
                long global = pos == null ? 0 : pos.get("global_step").asLong();
                listener.onStart(new Plan(train.size(), stepsPerEpoch, tc.epochs(), total, trimmedEx, trimmedTok, dropped,
                        model.numParams(), eot, global));
                TrainOptions opts = new TrainOptions((float) cfg.optimizer().beta1(), (float) cfg.optimizer().beta2(),
                        (float) cfg.optimizer().eps(), (float) cfg.optimizer().weightDecay(), (float) cfg.optimizer().gradClip(),
                        (float) tc.residDropout(), tc.seed(), tc.recomputeActivations());
                try (Trainer trainer = Trainer.create(model, opts)) {
                    if (state != null) trainer.loadState(state.resolve("optimizer.safetensors"));
                    if (!tc.device().equals("cpu")) {  // refuse a plan that cannot fit before the first step
                        int seq = cfg.data().maxTokens();
                        Trainer.MemoryPlan mp = trainer.planMemory(Math.max(1, tc.microBatchTokens() / seq), seq);
                        listener.onWarning("memory plan on " + tc.device() + ": " + mp.describe());
                    }
                    Path metricsPath = runDir.resolve("metrics.jsonl");
                    keepMetricsUpTo(metricsPath, global);
                    List<Path> checkpoints = new ArrayList<>();
                    List<Double> epochLosses = new ArrayList<>();
                    long t0 = System.nanoTime();
                    try (BufferedWriter metrics = Files.newBufferedWriter(metricsPath, StandardCharsets.UTF_8,
                            StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
                        for (int epoch = startEpoch; epoch <= tc.epochs(); epoch++) {
                            int[] order = order(train.size(), tc.seed(), epoch);
                            double lossSum = 0;
                            long lossN = 0;
                            for (int s = epoch == startEpoch ? startStep : 0; s < stepsPerEpoch; s++) {
                                long ts = System.nanoTime();
                                List<ChatFormat.Encoded> step = new ArrayList<>();
                                for (int i = s * tc.batchSize(); i < Math.min(train.size(), (s + 1) * tc.batchSize()); i++) {
                                    step.add(train.get(order[i]));
                                }
                                List<MicroBatch> mbs = MicroBatch.pack(step, tc.microBatchTokens());
                                long targets = mbs.stream().mapToLong(MicroBatch::targets).sum();
                                double loss = 0;
                                for (MicroBatch mb : mbs) {
                                    try (Batch b = new Batch(mb.rows(), mb.seqLen()).set(mb.tokens(), mb.mask(), mb.segments())) {
                                        loss += trainer.forwardBackward(b, targets).lossSum();
                                    }
                                }
                                long tokens = step.stream().mapToLong(ChatFormat.Encoded::length).sum();
                                double rate = lr.at(global);
                                Trainer.Step st = trainer.step((float) rate);
                                global = st.step();
                                double secs = (System.nanoTime() - ts) / 1e9;
                                StepMetrics m = new StepMetrics(global, epoch, s + 1, rate, loss / targets, targets,
                                        st.gradNorm(), st.clipped(), tokens, tokens / secs, (System.nanoTime() - t0) / 1e9);
                                metrics.write(JSON.writeValueAsString(metricsJson(m)));
                                metrics.write('\n');
                                metrics.flush();
                                lossSum += loss;
                                lossN += targets;
                                listener.onStep(m);
                                if (stop.get() && !(s + 1 == stepsPerEpoch)) {
                                    Path saved = saveState(model, trainer, eot, epoch, s + 1, global);
                                    listener.onStopped(saved, global);
                                    return new Result(false, global, checkpoints, epochLosses, runDir);
                                }
                            }
                            epochLosses.add(lossN == 0 ? Double.NaN : lossSum / lossN);
                            Path ckpt = saveCheckpoint(model, tokPath, eot, epoch, global);
                            checkpoints.add(ckpt);
                            saveState(model, trainer, eot, epoch + 1, 0, global);
                            double ppl = dev.isEmpty() ? Double.NaN
                                    : Perplexity.of(model, format, dev, tc.microBatchTokens()).perplexity();
                            listener.onEpoch(epoch, ckpt, ppl);
                            if (stop.get() && epoch < tc.epochs()) {
                                listener.onStopped(runDir.resolve("state"), global);
                                return new Result(false, global, checkpoints, epochLosses, runDir);
                            }
                        }
                    }
                    return new Result(true, global, checkpoints, epochLosses, runDir);
                } catch (IOException e) {
                    throw new UncheckedIOException("cannot write metrics in " + runDir + ": " + e.getMessage(), e);
                }
            }
        }
    }

    /** Every file the config names must exist before anything is written; errors name the key. */
    private void checkFiles() {
        List<String[]> files = new ArrayList<>();
        if (cfg.model().init().equals("pretrained") && !resume) files.add(new String[] {"model.path", cfg.model().path()});
        if (!cfg.model().tokenizer().isBlank()) files.add(new String[] {"model.tokenizer", cfg.model().tokenizer()});
        files.add(new String[] {"data.train", cfg.data().train()});
        if (!cfg.data().dev().isBlank()) files.add(new String[] {"data.dev", cfg.data().dev()});
        for (String[] f : files) {
            if (!f[1].startsWith("embedded:") && !Files.exists(Path.of(f[1]))) {
                throw new ConfigException("config key \"" + f[0] + "\": " + f[1] + " does not exist");
            }
        }
    }

    private Model openModel(Tokenizer tok, Path state) {
        String device = cfg.training().device();
        if (state != null) return Model.load(state.resolve("model"), device);
        LimaConfig.Model m = cfg.model();
        if (m.init().equals("pretrained")) return Model.load(resolve(m.path()), device);
        LimaConfig.Architecture a = m.architecture();
        ModelConfig mc = new ModelConfig(tok.vocabSize(), a.hiddenSize(), a.intermediateSize(), a.numLayers(), a.numHeads(),
                a.numKvHeads(), 0, a.maxPositionEmbeddings(), 1e-6f, (float) a.ropeTheta(), false, tok.bosId(), tok.eosId(),
                -1, 0.02f);
        return Model.random(mc, cfg.training().seed(), device);
    }

    /**
     * The EOT id recorded in the limactl.json of a checkpoint directory made by limactl train, or -1 if
     * the directory has none (a plain Hugging Face checkpoint).
     */
    public static int checkpointEotId(Path checkpointDir) {
        Path meta = checkpointDir.resolve("limactl.json");
        if (!Files.exists(meta)) return -1;
        int eot = readJson(meta).path("eot_token_id").asInt(-1);
        if (eot < 0) throw new RunStateException(meta + ": no valid eot_token_id");
        return eot;
    }

    /** The EOT id: from limactl.json of a checkpoint made by limactl, else a new token after the tokenizer's. */
    private int eotId(Model model, Tokenizer tok, Path state) {
        Path dir = state != null ? state.resolve("model")
                : cfg.model().init().equals("pretrained") ? resolve(cfg.model().path()) : null;
        int vocab = model.config().vocabSize();
        int recorded = dir == null ? -1 : checkpointEotId(dir);
        if (recorded >= 0) {
            if (recorded >= vocab) throw new RunStateException(dir.resolve("limactl.json") + ": eot_token_id " + recorded + " is not in the vocabulary");
            return recorded;
        }
        int eot = ChatFormat.eotIdFor(tok);
        if (vocab < eot) {
            throw new RunStateException("the model's vocabulary (" + vocab + ") is smaller than the tokenizer's (" + eot
                    + "): wrong tokenizer for this model?");
        }
        if (vocab == eot) model.resizeVocab(eot + 1);  // add LIMA's EOT token
        return eot;
    }

    private Path saveCheckpoint(Model model, Path tokPath, int eot, int epoch, long step) {
        Path dir = runDir.resolve("checkpoints").resolve(String.format("epoch-%02d", epoch));
        model.save(dir, cfg.training().saveDtype().equals("f32") ? Dtype.F32 : Dtype.BF16);
        copy(tokPath, dir.resolve(tokPath.getFileName().toString().endsWith(".json") ? "tokenizer.json" : "tokenizer.model"));
        writeMeta(dir, eot, epoch, step);
        return dir;
    }

    /** Writes state.tmp, then swaps it in for state (state.old is the fallback if a crash hits the swap). */
    private Path saveState(Model model, Trainer trainer, int eot, int epoch, int stepInEpoch, long global) {
        Path tmp = runDir.resolve("state.tmp"), cur = runDir.resolve("state"), old = runDir.resolve("state.old");
        deleteTree(tmp);
        mkdirs(tmp);
        model.save(tmp.resolve("model"), Dtype.F32);
        writeMeta(tmp.resolve("model"), eot, epoch, global);
        trainer.saveState(tmp.resolve("optimizer.safetensors"));
        ObjectNode pos = JSON.createObjectNode().put("epoch", epoch).put("step_in_epoch", stepInEpoch).put("global_step", global);
        write(tmp.resolve("trainer.json"), pos.toString());
        deleteTree(old);
        try {
            if (Files.exists(cur)) Files.move(cur, old, StandardCopyOption.ATOMIC_MOVE);
            Files.move(tmp, cur, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot save state in " + runDir + ": " + e.getMessage(), e);
        }
        deleteTree(old);
        return cur;
    }

    private void writeMeta(Path dir, int eot, int epoch, long step) {
        ObjectNode meta = JSON.createObjectNode().put("eot_token_id", eot).put("chat_format", CHAT_FORMAT)
                .put("epoch", epoch).put("step", step);
        write(dir.resolve("limactl.json"), meta.toPrettyString());
    }

    private static Path stateDir(Path runDir) {
        for (String name : List.of("state", "state.old")) {
            Path p = runDir.resolve(name);
            if (Files.exists(p.resolve("trainer.json"))) return p;
        }
        return null;
    }

    static int[] order(int n, long seed, int epoch) {
        List<Integer> idx = new ArrayList<>();
        for (int i = 0; i < n; i++) idx.add(i);
        java.util.Collections.shuffle(idx, new Random(seed * 1_000_003L + epoch));
        return idx.stream().mapToInt(Integer::intValue).toArray();
    }

    private static ObjectNode metricsJson(StepMetrics m) {
        return JSON.createObjectNode().put("step", m.step()).put("epoch", m.epoch()).put("step_in_epoch", m.stepInEpoch())
                .put("lr", m.lr()).put("loss", m.loss()).put("targets", m.targets()).put("grad_norm", m.gradNorm())
                .put("clipped", m.clipped()).put("tokens", m.tokens()).put("tokens_per_s", m.tokensPerSec())
                .put("elapsed_s", m.elapsedSec());
    }

    /** After a crash between a metrics line and the next state save, drop the lines the resume will redo. */
    private static void keepMetricsUpTo(Path metrics, long step) {
        if (!Files.exists(metrics)) return;
        try {
            List<String> keep = new ArrayList<>();
            for (String line : Files.readAllLines(metrics)) {
                if (!line.isBlank() && JSON.readTree(line).path("step").asLong() <= step) keep.add(line);
            }
            write(metrics, keep.isEmpty() ? "" : String.join("\n", keep) + "\n");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + metrics + ": " + e.getMessage(), e);
        }
    }

    /** "embedded:demo/x" names a resource shipped in the jar; it is copied into the run directory. */
    private Path resolve(String path) {
        if (!path.startsWith("embedded:")) return Path.of(path);
        String res = path.substring("embedded:".length());
        Path dst = runDir.resolve("embedded").resolve(res);
        if (!Files.exists(dst)) {
            try (InputStream in = TrainRun.class.getResourceAsStream("/dev/limactl/" + res)) {
                if (in == null) throw new RunStateException("no embedded resource " + res);
                mkdirs(dst.getParent());
                Files.copy(in, dst);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot extract " + res + ": " + e.getMessage(), e);
            }
        }
        return dst;
    }

    private static JsonNode readJson(Path p) {
        try {
            return JSON.readTree(p.toFile());
        } catch (IOException e) {
            throw new RunStateException("cannot read " + p + ": " + e.getMessage());
        }
    }

    private static void write(Path p, String text) {
        AtomicFiles.writeString(p, text);
    }

    private static void copy(Path from, Path to) {
        try {
            Files.copy(from, to, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot copy " + from + " to " + to + ": " + e.getMessage(), e);
        }
    }

    private static void mkdirs(Path p) {
        try {
            Files.createDirectories(p);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create " + p + ": " + e.getMessage(), e);
        }
    }

    private static void deleteTree(Path p) {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) Files.delete(q);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot delete " + p + ": " + e.getMessage(), e);
        }
    }
}
