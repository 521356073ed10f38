package dev.limactl.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.chat.ChatFormat;
import dev.limactl.checkpoint.Checkpoint;
import dev.limactl.config.ConfigException;
import dev.limactl.config.ConfigLoader;
import dev.limactl.config.LimaConfig;
import dev.limactl.data.AtomicFiles;
import dev.limactl.data.Example;
import dev.limactl.data.ExampleFiles;
import dev.limactl.engine.Batch;
import dev.limactl.engine.Communicator;
import dev.limactl.engine.Dtype;
import dev.limactl.engine.Lima;
import dev.limactl.engine.Model;
import dev.limactl.engine.ModelConfig;
import dev.limactl.engine.TrainOptions;
import dev.limactl.engine.Trainer;
import dev.limactl.tokenizer.Tokenizer;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * One fine-tuning run with the LIMA recipe, in a run directory:
 * <pre>
 *   config.yaml                 the resolved configuration (a resume reads it back)
 *   metrics.jsonl               one line per optimiser step (the epoch's last also has dev_perplexity)
 *   tensorboard/                the same scalars as TensorBoard event files
 *   checkpoints/epoch-NN/       Hugging Face checkpoint + tokenizer + limactl.json, one per epoch
 *   state/                      resumable state: fp32 model, optimiser moments, position in the data
 * </pre>
 * The data order of epoch e is a pure function of (seed, e), dropout masks of (seed, step, ...), and
 * the state holds the exact fp32 weights and moments, so a resumed run reproduces an uninterrupted one.
 */
public final class TrainRun {
    private static final ObjectMapper JSON = new ObjectMapper();

    public record Plan(int examples, int stepsPerEpoch, int epochs, long totalSteps, int trimmedExamples,
                       long trimmedTokens, int droppedEmpty, long numParams, int eotId, long startStep, long frozenParams) {}

    /** commSeconds: time in collectives (the gradient sum, the weight all-gather, the loss; 0 for one process). */
    public record StepMetrics(long step, int epoch, int stepInEpoch, double lr, double loss, long targets,
                              double gradNorm, boolean clipped, long tokens, double tokensPerSec, double elapsedSec,
                              double commSeconds) {}

    public record Result(boolean completed, long steps, List<Path> checkpoints, List<Double> epochLosses, Path runDir) {}

    private final LimaConfig cfg;
    private final String configYaml;
    private final RunDirectory run;
    private final boolean resume;
    private final Placement place;
    private final dev.limactl.config.KeepRule keep;
    private final AtomicBoolean stop = new AtomicBoolean();
    private final CountDownLatch finished = new CountDownLatch(1);
    private final AtomicBoolean started = new AtomicBoolean();

    private TrainRun(LimaConfig cfg, String configYaml, Path runDir, boolean resume, Placement place) {
        this.cfg = cfg;
        this.keep = dev.limactl.config.KeepRule.parse(cfg.checkpoint().keep());
        this.configYaml = configYaml;
        this.run = new RunDirectory(runDir);
        this.resume = resume;
        this.place = place;
        checkRanks(place.world());
    }

    /** Refuses, before any rank starts, what a job of {@code world} ranks cannot run: offload is for one process. */
    public TrainRun checkRanks(int world) {
        if (world > 1 && cfg.training().offload().equals("on")) {
            throw new ConfigException("config key \"training.offload\" on is for one process; data-parallel ranks shard the optimiser"
                    + " state over the ranks instead (distributed.zero_stage)");
        }
        return this;
    }

    private boolean cuda() {
        return cfg.training().device().startsWith("cuda");
    }

    /**
     * This rank's device: training.device, except that "cuda" on a data-parallel rank is the GPU of its
     * local rank (modulo the GPUs this host has, so ranks may share one where NCCL is told they are on
     * different hosts, NCCL_HOSTID).
     */
    private String device() {
        String d = cfg.training().device();
        if (!d.equals("cuda") || !place.distributed()) return d;
        int n = Lima.cudaDevices().size();
        return "cuda:" + (n == 0 ? 0 : place.localRank() % n);
    }

    /**
     * A new run of the given configuration in runDir (which must not already hold a run), as the
     * rank the launcher's environment names (see {@link Placement}; one process without one).
     */
    public static TrainRun create(ConfigLoader config, Path runDir) {
        return create(config, runDir, Placement.fromEnvironment(System.getenv()));
    }

    /** A new run as the given rank of a data-parallel job (rank 0 writes the run's files). */
    public static TrainRun create(ConfigLoader config, Path runDir, Placement place) {
        if (place.rank() == 0 && Files.exists(new RunDirectory(runDir).config())) {
            throw new RunStateException("run directory " + runDir + " already holds a run; pass --resume to continue it"
                    + " or choose another run directory");
        }
        return new TrainRun(config.load(), config.toYaml(), runDir, false, place);
    }

    /** Continues the run in runDir from its last saved state, with the run's own config.yaml. */
    public static TrainRun resume(Path runDir) {
        return resume(runDir, Placement.fromEnvironment(System.getenv()));
    }

    /** Continues the run as the given rank of a data-parallel job. */
    public static TrainRun resume(Path runDir, Placement place) {
        RunDirectory rd = new RunDirectory(runDir);
        if (!Files.exists(rd.config())) throw new RunStateException("nothing to resume: " + runDir + " has no config.yaml");
        if (rd.state() == null) {
            throw new RunStateException("nothing to resume: " + runDir + " has no saved state yet (the run stopped before its first save)");
        }
        ConfigLoader l = ConfigLoader.preset(null).file(rd.config());
        return new TrainRun(l.load(), l.toYaml(), runDir, true, place);
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
        return run.dir;
    }

    /** Trains to the end (or until requestStop), writing checkpoints, metrics and resumable state. */
    public Result run(TrainListener listener) {
        started.set(true);
        Communicator comm = null, nccl = null;
        try {
            LimaConfig.Training tc = cfg.training();
            if (tc.threads() > 0) Lima.setThreads(tc.threads());
            checkFiles();
            // Every rank joins before anything is written; rank 0 then writes the run's files (and
            // extracts embedded data) while the others wait, so no two processes write one file.
            comm = join();
            TrainListener events = place.rank() == 0 ? listener : new TrainListener() {};
            if (place.rank() == 0) {
                RunDirectory.mkdirs(run.dir);
                if (resume) run.removeStaleTemporaries();
                if (!resume) AtomicFiles.writeString(run.config(), configYaml);
            }
            Path tokPath = place.rank() == 0 ? tokenizerPath() : null;
            if (comm != null) comm.barrier();
            if (tokPath == null) tokPath = tokenizerPath();
            Path state = resume ? run.state() : null;
            try (Tokenizer tok = Tokenizer.open(tokPath); Model model = openModel(tok, state)) {
                Session s = prepare(model, tok, tokPath, state, events);
                if (hollowOnCuda) model.toDevice(device());  // its final shape; the trainer fills this rank's pieces there
                OffloadChoice.Decision oc = offloadChoice(model);
                if (oc.report() != null) events.onWarning(oc.report());
                if (comm != null && cuda()) {  // CUDA ranks: NCCL for the trainer's collectives, Gloo stays for the host's
                    nccl = Communicator.joinNccl(comm, device(), java.time.Duration.ofSeconds(cfg.distributed().timeoutS()));
                }
                try (Trainer trainer = Trainer.create(model, trainOptions(oc.offload()))) {
                    if (comm != null) trainer.setCommunicator(nccl != null ? nccl : comm, cfg.distributed().zeroStage());
                    if (state != null) run.loadOptimizerState(trainer, state, place, cfg.distributed().zeroStage());
                    int seq = cfg.data().maxTokens();  // the largest micro-batch: a whole step when it fits one
                    long tokens = Math.min(tc.microBatchTokens(), (long) tc.batchSize() * seq);
                    Trainer.MemoryPlan mp = trainer.planMemory((int) Math.max(1, tokens / seq), seq);
                    if (!tc.device().equals("cpu")) {  // refused by the plan itself when it cannot fit, before the first step
                        events.onWarning("memory plan on " + device() + ": " + mp.describe());
                    } else {
                        HostMemory.check(mp, model, place, cfg.distributed().zeroStage(), System.getenv());
                    }
                    return train(s, trainer, comm, events);
                }
            }
        } catch (RuntimeException e) {
            // A new run that failed before its first state leaves no half-made run behind: the same
            // command (once the cause is fixed) starts it afresh instead of meeting "already holds a run".
            if (!resume && place.rank() == 0 && run.state() == null) run.forgetUnstartedRun();
            throw e;
        } finally {
            if (nccl != null) nccl.close();
            if (comm != null) comm.close();
            finished.countDown();
        }
    }

    /** The communicator of a data-parallel run (null for one process). */
    private Communicator join() {
        if (!place.distributed()) return null;
        LimaConfig.Distributed d = cfg.distributed();
        String rv = place.rendezvous(d.rendezvous(), System.getenv(), run.dir);
        java.time.Duration timeout = java.time.Duration.ofSeconds(d.timeoutS());
        if (rv.startsWith("file:")) {
            RunDirectory.mkdirs(Path.of(rv.substring("file:".length())));
            return Communicator.join("gloo", place.rank(), place.world(), rv, timeout);
        }
        // tcp://: rank 0 hosts the key-value server the ranks meet at, until every rank is connected
        Path log = Path.of(System.getProperty("java.io.tmpdir"), "limactl-rendezvous-" + ProcessHandle.current().pid() + ".log");
        RendezvousServer server = rv.startsWith("tcp://") && place.rank() == 0 ? RendezvousServer.start(rv, log, timeout) : null;
        try {
            Communicator comm = Communicator.join("gloo", place.rank(), place.world(), rv, timeout);
            try {
                comm.barrier();  // every rank has met: the server is no longer needed
            } catch (RuntimeException e) {
                comm.close();
                throw e;
            }
            return comm;
        } finally {
            if (server != null) server.close();
            try {
                java.nio.file.Files.deleteIfExists(log);
            } catch (java.io.IOException ignored) {
                // a temporary log
            }
        }
    }

    private Path tokenizerPath() {
        Path tok = run.resolve(cfg.model().tokenizer().isBlank() ? cfg.model().path() : cfg.model().tokenizer());
        run.resolve(cfg.data().train());
        if (!cfg.data().dev().isBlank()) run.resolve(cfg.data().dev());
        return tok;
    }

    /** What the loop works with, prepared once: the data, the schedule and where to start. */
    private record Session(Model model, Path tokenizer, int eot, ChatFormat format, TrainingData data, List<Example> dev,
                           int stepsPerEpoch, LrSchedule lr, RunDirectory.Position start) {}

    private Session prepare(Model model, Tokenizer tok, Path tokPath, Path state, TrainListener listener) {
        LimaConfig.Training tc = cfg.training();
        int eot = eotId(model, tok, state);
        // Examples longer than the model's context are trimmed to it (not refused mid-run): said once.
        int context = model.config().maxPositionEmbeddings(), maxTokens = Math.min(cfg.data().maxTokens(), context);
        if (maxTokens < cfg.data().maxTokens()) {
            listener.onWarning("the model's context is " + context + " tokens, shorter than data.max_tokens (" + cfg.data().maxTokens()
                    + "): examples are trimmed to " + context);
        }
        ChatFormat format = new ChatFormat(tok, eot, maxTokens);
        TrainingData data = TrainingData.encode(ExampleFiles.read(run.resolve(cfg.data().train()), "train"), format);
        if (data.dropped() > 0) {
            listener.onWarning(data.dropped() + " example(s) have no response tokens left after trimming to "
                    + maxTokens + " tokens and are skipped: " + String.join(", ", data.droppedIds())
                    + (data.dropped() > data.droppedIds().size() ? ", ..." : ""));
        }
        if (data.examples().isEmpty()) {
            throw new dev.limactl.data.DataFormatException("no trainable examples in " + cfg.data().train() + " (every example is empty"
                    + " or has no response token left after trimming to " + maxTokens + " tokens)");
        }
        List<Example> dev = cfg.data().dev().isBlank() ? List.of() : ExampleFiles.read(run.resolve(cfg.data().dev()), "dev");
        int stepsPerEpoch = (data.examples().size() + tc.batchSize() - 1) / tc.batchSize();
        long total = (long) stepsPerEpoch * tc.epochs();
        RunDirectory.Position start = state == null ? RunDirectory.Position.START : RunDirectory.position(state);
        if (cfg.adapter().lora()) attachAdapter(model, eot, state, tokPath);
        long trained = cfg.adapter().lora() ? model.adapterParams() : model.numParams();
        listener.onStart(new Plan(data.examples().size(), stepsPerEpoch, tc.epochs(), total, data.trimmedExamples(),
                data.trimmedTokens(), data.dropped(), trained, eot, start.globalStep(), cfg.adapter().lora() ? model.numParams() : 0));
        return new Session(model, tokPath, eot, format, data, dev, stepsPerEpoch,
                schedule(total), start);
    }

    /** The epochs from the start position: steps, then each epoch's checkpoint, state and dev perplexity. */
    private Result train(Session s, Trainer trainer, Communicator comm, TrainListener listener) {
        LimaConfig.Training tc = cfg.training();
        if (place.rank() == 0) run.keepMetricsUpTo(s.start().globalStep());
        // rank 0 keeps the metrics; the others write nothing but their optimiser shard
        Path metricsFile = place.rank() == 0 ? run.metrics() : Path.of("/dev/null");
        List<Path> checkpoints = new ArrayList<>();
        List<Double> epochLosses = new ArrayList<>();
        long global = s.start().globalStep(), t0 = System.nanoTime();
        // A resumable state from the first moment, then every checkpoint.state_every_steps steps (0: when
        // 5 minutes of work have passed), so that a kill at any point loses at most that much.
        if (!resume) run.saveState(s.model(), trainer, s.eot(), s.start(), comm, cfg.distributed().zeroStage());
        int every = cfg.checkpoint().stateEverySteps();
        long lastSave = System.nanoTime();
        try (BufferedWriter metrics = Files.newBufferedWriter(metricsFile, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                StandardOpenOption.APPEND);
             TensorBoardWriter tb = place.rank() == 0 ? TensorBoardWriter.open(run.dir.resolve("tensorboard")) : null) {
            for (int epoch = s.start().epoch(); epoch <= tc.epochs(); epoch++) {
                double devPerplexity = Double.NaN;
                int[] order = order(s.data().examples().size(), tc.seed(), epoch);
                double lossSum = 0;
                long lossN = 0;
                for (int k = epoch == s.start().epoch() ? s.start().stepInEpoch() : 0; k < s.stepsPerEpoch(); k++) {
                    StepMetrics m = trainStep(s, trainer, comm, s.data().step(order, k, tc.batchSize()), epoch, k, global, t0);
                    global = m.step();
                    ObjectNode line = metricsJson(m);
                    boolean epochEnd = k + 1 == s.stepsPerEpoch();
                    if (epochEnd) {  // the epoch's last step: its dev perplexity goes on this line
                        devPerplexity = devPerplexity(s);
                        if (Double.isFinite(devPerplexity)) line.put("dev_perplexity", devPerplexity);
                    }
                    metrics.write(JSON.writeValueAsString(line));
                    metrics.write('\n');
                    metrics.flush();
                    if (tb != null) {
                        tb.scalar("train/loss", global, m.loss());
                        tb.scalar("train/lr", global, m.lr());
                        tb.scalar("train/grad_norm", global, m.gradNorm());
                        tb.scalar("train/tokens_per_s", global, m.tokensPerSec());
                        if (epochEnd && Double.isFinite(devPerplexity)) tb.scalar("dev/perplexity", global, devPerplexity);
                        tb.flush();
                    }
                    lossSum += m.loss() * m.targets();
                    lossN += m.targets();
                    listener.onStep(m);
                    boolean due = k + 1 < s.stepsPerEpoch() && (every > 0 ? (k + 1) % every == 0
                            : System.nanoTime() - lastSave > 300_000_000_000L);
                    if (comm != null) {  // every rank saves at the same step: rank 0's clock decides
                        float[] f = {place.rank() == 0 && due ? 1 : 0};
                        comm.allreduceSum(f);
                        due = f[0] > 0;
                    }
                    if (due) {
                        run.saveState(s.model(), trainer, s.eot(), new RunDirectory.Position(epoch, k + 1, global), comm,
                                cfg.distributed().zeroStage());
                        lastSave = System.nanoTime();
                    }
                    if (stopAgreed(comm) && k + 1 < s.stepsPerEpoch()) {
                        Path saved = run.saveState(s.model(), trainer, s.eot(), new RunDirectory.Position(epoch, k + 1, global), comm,
                                cfg.distributed().zeroStage());
                        listener.onStopped(saved, global);
                        return new Result(false, global, checkpoints, epochLosses, run.dir);
                    }
                }
                epochLosses.add(lossN == 0 ? Double.NaN : lossSum / lossN);
                Path ck = endOfEpoch(s, trainer, comm, epoch, global, devPerplexity, listener);
                if (ck != null) checkpoints.add(ck);
                if (place.rank() == 0) {
                    List<Path> pruned = run.pruneCheckpoints(keep, epoch);
                    checkpoints.removeAll(pruned);
                    if (!pruned.isEmpty()) listener.onPruned(pruned, keep.text());
                }
                lastSave = System.nanoTime();
                if (stopAgreed(comm) && epoch < tc.epochs()) {
                    listener.onStopped(run.dir.resolve("state"), global);
                    return new Result(false, global, checkpoints, epochLosses, run.dir);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write metrics in " + run.dir + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        return new Result(true, global, checkpoints, epochLosses, run.dir);
    }

    /** Whether every rank stops here: any rank asked (Ctrl-C reaches ranks at different moments). */
    private boolean stopAgreed(Communicator comm) {
        if (comm == null) return stop.get();
        float[] f = {stop.get() ? 1 : 0};
        comm.allreduceSum(f);
        return f[0] > 0;
    }

    /**
     * One optimiser step: the step's examples packed into micro-batches (the same on every rank),
     * this rank's share of them (micro-batch k goes to rank k mod world, keyed by k for its dropout
     * masks, as one process would), gradients accumulated and summed over the ranks, AdamW.
     */
    private StepMetrics trainStep(Session s, Trainer trainer, Communicator comm, List<ChatFormat.Encoded> step, int epoch, int k,
                                  long global, long t0) {
        long ts = System.nanoTime();
        List<MicroBatch> mbs = MicroBatch.pack(step, cfg.training().microBatchTokens());
        long targets = mbs.stream().mapToLong(MicroBatch::targets).sum();
        double loss = 0;
        for (int round = 0; round * place.world() < mbs.size(); round++) {
            int i = round * place.world() + place.rank();
            if (i >= mbs.size()) {  // none for this rank in the last round (ZeRO-3 still takes part in the collectives)
                trainer.skipMicroBatch();
                continue;
            }
            MicroBatch mb = mbs.get(i);
            if (comm != null) trainer.setMicroBatch(i);
            try (Batch b = new Batch(mb.rows(), mb.seqLen()).set(mb.tokens(), mb.mask(), mb.segments())) {
                loss += trainer.forwardBackward(b, targets).lossSum();
            }
        }
        double lossComm = 0;
        if (comm != null) {  // the step's loss over every rank's micro-batches
            long tc = System.nanoTime();
            float[] l = {(float) loss};
            comm.allreduceSum(l);
            loss = l[0];
            lossComm = (System.nanoTime() - tc) / 1e9;
        }
        long tokens = step.stream().mapToLong(ChatFormat.Encoded::length).sum();
        double rate = s.lr().at(global);
        Trainer.Step st = trainer.step((float) rate);
        double secs = (System.nanoTime() - ts) / 1e9;
        return new StepMetrics(st.step(), epoch, k + 1, rate, loss / targets, targets, st.gradNorm(), st.clipped(), tokens,
                tokens / secs, (System.nanoTime() - t0) / 1e9, st.commSeconds() + lossComm);
    }

    /** The model's perplexity on the dev set (NaN without one). */
    private double devPerplexity(Session s) {
        return s.dev().isEmpty() ? Double.NaN : Perplexity.of(s.model(), s.format(), s.dev(), cfg.training().microBatchTokens()).perplexity();
    }

    /** The epoch's checkpoint (rank 0, with its dev perplexity in limactl.json) and a resumable state at the next epoch. */
    private Path endOfEpoch(Session s, Trainer trainer, Communicator comm, int epoch, long global, double ppl, TrainListener listener) {
        LimaConfig.Training tc = cfg.training();
        Dtype dtype = tc.saveDtype().equals("f32") ? Dtype.F32 : Dtype.BF16;
        // checkpoint.keep: an epoch no term keeps is not written at all
        Path ck = !keep.writes(epoch) ? null
                : run.saveCheckpoint(s.model(), trainer, place.rank(), dtype, s.tokenizer(), s.eot(), epoch, global, ppl, listener::onWarning);
        run.saveState(s.model(), trainer, s.eot(), new RunDirectory.Position(epoch + 1, 0, global), comm, cfg.distributed().zeroStage());
        listener.onEpoch(epoch, ck, ppl);
        return ck;
    }

    /** The config's schedule over a run of {@code total} steps (LIMA's presets: linear, no warm-up). */
    private LrSchedule schedule(long total) {
        LimaConfig.Optimizer o = cfg.optimizer();
        return new LrSchedule(o.lr(), o.finalLr(), total, o.schedule(), LrSchedule.warmup(o.warmupSteps(), o.warmupRatio(), total));
    }

    /** Offloaded training recomputes each layer's activations (ZeRO-Offload's recipe: the device keeps little). */
    private TrainOptions trainOptions(boolean offload) {
        LimaConfig.Optimizer o = cfg.optimizer();
        LimaConfig.Training tc = cfg.training();
        return new TrainOptions((float) o.beta1(), (float) o.beta2(), (float) o.eps(), (float) o.weightDecay(), (float) o.gradClip(),
                (float) tc.residDropout(), tc.seed(), tc.recomputeActivations() || offload, offload);
    }

    /** training.offload against the memory of each mode on this device (the model is loaded on it already). */
    private OffloadChoice.Decision offloadChoice(Model model) {
        LimaConfig.Training tc = cfg.training();
        long tokens = Math.min(tc.microBatchTokens(), (long) tc.batchSize() * cfg.data().maxTokens());
        long deviceFree = 0;
        if (!tc.device().equals("cpu") && !cfg.adapter().lora() && !place.distributed()) {
            int index = tc.device().equals("cuda") ? 0 : Integer.parseInt(tc.device().substring("cuda:".length()));
            deviceFree = Lima.cudaDevices().get(index).freeMemory() + dev.limactl.plan.MemoryPlan.modelOnDevice(model.config());
        }
        return OffloadChoice.decide(tc.offload(), cfg.adapter().lora(), place.distributed(), tc.device(), model.config(), tokens,
                tc.recomputeActivations(), cfg.adapter().r(), deviceFree, HostMemory.available(Path.of("/proc/meminfo")));
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

    /** The model openModel made is hollow and goes to a CUDA device (ZeRO-3 on CUDA ranks). */
    private boolean hollowOnCuda;

    private Model openModel(Tokenizer tok, Path state) {
        String device = device();
        // ZeRO-3 (CPU or CUDA ranks): no rank holds the whole model; rank 0 reads a checkpoint unit by unit and sends
        // each rank its pieces (a random model is made whole on rank 0)
        boolean sharded = place.distributed() && cfg.distributed().zeroStage() == 3 && !cfg.adapter().lora();
        boolean hollow = sharded && (place.rank() != 0 || state != null || cfg.model().init().equals("pretrained"));
        hollowOnCuda = hollow && !device.equals("cpu");  // made on the host, put on the device once its shape is final
        if (cfg.adapter().lora()) {  // the base: the pretrained model, or the random one saved at the run's start
            run.adapterBase = cfg.model().init().equals("pretrained") ? run.resolve(cfg.model().path()) : run.dir.resolve("base");
            if (Files.exists(run.adapterBase.resolve("config.json"))) return Model.load(run.adapterBase, device);
        } else if (state != null) {
            return hollow ? Model.loadHollow(state.resolve("model")) : Model.load(state.resolve("model"), device);
        }
        LimaConfig.Model m = cfg.model();
        if (m.init().equals("pretrained")) return hollow ? Model.loadHollow(run.resolve(m.path())) : Model.load(run.resolve(m.path()), device);
        LimaConfig.Architecture a = m.architecture();
        ModelConfig mc = new ModelConfig(tok.vocabSize(), a.hiddenSize(), a.intermediateSize(), a.numLayers(), a.numHeads(),
                a.numKvHeads(), 0, a.maxPositionEmbeddings(), 1e-6f, (float) a.ropeTheta(), false, tok.bosId(), tok.eosId(),
                -1, 0.02f);
        return hollow ? Model.hollow(mc) : Model.random(mc, cfg.training().seed(), device);
    }

    /**
     * A LoRA run's adapter: the saved one on a resume, else a fresh one (the EOT rows trainable with
     * adapter.train_eot); a random base is saved once (run/base) so that the adapters have a base to
     * name and a resume starts from the same one.
     */
    private void attachAdapter(Model model, int eot, Path state, Path tokPath) {
        if (cfg.adapter().qlora() && state != null) model.quantizeNf4(cfg.adapter().doubleQuant());
        if (state != null) {
            model.loadAdapter(state.resolve("adapter"));
            return;
        }
        if (!Files.exists(run.adapterBase.resolve("config.json"))) {
            if (place.rank() == 0) {
                model.save(run.adapterBase, Dtype.F32);
                run.copyTokenizer(tokPath, run.adapterBase);
                Checkpoint.lima(eot, 0, 0).write(run.adapterBase);
            }
        }
        LimaConfig.Adapter a = cfg.adapter();
        if (a.qlora()) model.quantizeNf4(a.doubleQuant());  // after the base was saved in full precision
        model.addAdapter(new Model.AdapterSpec(a.r(), (float) a.alpha(), (float) a.dropout(), a.targetSet(),
                a.trainEot() ? new int[] {eot} : new int[0], a.rslora()), cfg.training().seed());
    }

    /** The EOT id: from limactl.json of a checkpoint made by limactl, else a new token after the tokenizer's. */
    private int eotId(Model model, Tokenizer tok, Path state) {
        Path dir = state != null ? state.resolve(cfg.adapter().lora() ? "adapter" : "model")
                : cfg.model().init().equals("pretrained") ? run.resolve(cfg.model().path()) : null;
        int vocab = model.config().vocabSize();
        if (dir != null) {
            var recorded = Checkpoint.read(dir);
            if (recorded.isPresent()) {
                // a LoRA run's base does not hold the EOT row its adapter trains: grown as at the start
                if (cfg.adapter().lora() && recorded.get().eotTokenId() == vocab) model.resizeVocab(vocab + 1);
                return recorded.get().eotWithin(model.config().vocabSize(), dir);
            }
        }
        String reuse = cfg.model().eotToken();
        if (!reuse.isEmpty()) {  // a token the tokenizer already has ends each turn (e.g. Llama 3's <|eot_id|>)
            int id = tok.idOf(reuse);
            if (id < 0 || id >= vocab) {
                throw new dev.limactl.config.ConfigException("config key \"model.eot_token\": \"" + reuse + "\" is not one token of the tokenizer"
                        + (id >= vocab ? " within the model's vocabulary of " + vocab : "") + "; leave it empty to add LIMA's own EOT token");
            }
            if (id == tok.eosId() || id == tok.bosId()) {
                throw new dev.limactl.config.ConfigException("config key \"model.eot_token\": \"" + reuse + "\" is the tokenizer's "
                        + (id == tok.eosId() ? "EOS" : "BOS") + "; LIMA's end of turn must be a token of its own");
            }
            return id;
        }
        int eot = ChatFormat.eotIdFor(tok);
        if (vocab < eot) {
            throw new RunStateException("the model's vocabulary (" + vocab + ") is smaller than the tokenizer's (" + eot
                    + "): wrong tokenizer for this model?");
        }
        if (vocab == eot) model.resizeVocab(eot + 1);  // add LIMA's EOT token
        return eot;
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
                .put("elapsed_s", m.elapsedSec()).put("comm_s", m.commSeconds());
    }
}
