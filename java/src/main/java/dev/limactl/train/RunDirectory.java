package dev.limactl.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.checkpoint.Checkpoint;
import dev.limactl.data.AtomicFiles;
import dev.limactl.engine.Communicator;
import dev.limactl.engine.Dtype;
import dev.limactl.engine.Model;
import dev.limactl.engine.Trainer;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/**
 * The files of a run directory (see {@link TrainRun}): the resolved config, the metrics, the epoch
 * checkpoints and the resumable state, which is written beside the old one and swapped in so that a
 * crash at any moment leaves one complete state.
 */
final class RunDirectory {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** Where a resume continues from: epoch, step within it, optimiser steps taken. */
    record Position(int epoch, int stepInEpoch, long globalStep) {
        static final Position START = new Position(1, 0, 0);
    }

    final Path dir;
    /** LoRA runs: the base model the adapters go over (saved states and checkpoints are adapters); null: full fine-tuning. */
    Path adapterBase;

    RunDirectory(Path dir) {
        this.dir = dir;
    }

    Path config() {
        return dir.resolve("config.yaml");
    }

    Path metrics() {
        return dir.resolve("metrics.jsonl");
    }

    /** The complete saved state (state, or state.old if a crash hit the swap), or null if none. */
    Path state() {
        for (String name : List.of("state", "state.old")) {
            Path p = dir.resolve(name);
            if (Files.exists(p.resolve("trainer.json"))) return p;
        }
        return null;
    }

    static Position position(Path state) {
        JsonNode pos = readJson(state.resolve("trainer.json"));
        return new Position(pos.get("epoch").asInt(), pos.get("step_in_epoch").asInt(), pos.get("global_step").asLong());
    }

    /**
     * Writes state.tmp, then swaps it in for state (state.old is the fallback if a crash hits the
     * swap). With ranks (comm not null), rank 0 writes the model and the position, each rank with a
     * shard of the optimiser state (ZeRO >= 1) its own file, and rank 0 swaps once all have written.
     */
    Path saveState(Model model, Trainer trainer, int eot, Position next, Communicator comm, int zeroStage) {
        Path tmp = dir.resolve("state.tmp"), cur = dir.resolve("state"), old = dir.resolve("state.old");
        int rank = comm == null ? 0 : comm.rank(), world = comm == null ? 1 : comm.world();
        Path m = tmp.resolve(adapterBase != null ? "adapter" : "model");
        if (rank == 0) {
            deleteTree(tmp);
            mkdirs(tmp);
        }
        saveWeights(model, trainer, m, Dtype.F32, rank);
        if (rank == 0) {
            Checkpoint.lima(eot, next.epoch(), next.globalStep()).write(m);
            ObjectNode pos = JSON.createObjectNode().put("epoch", next.epoch()).put("step_in_epoch", next.stepInEpoch())
                    .put("global_step", next.globalStep()).put("world", world).put("zero_stage", comm == null ? 0 : zeroStage);
            AtomicFiles.writeString(tmp.resolve("trainer.json"), pos.toString());
        }
        if (comm != null) comm.barrier();
        if (comm != null && zeroStage >= 1) trainer.saveState(tmp.resolve(shardFile(rank, world)));
        else if (rank == 0) trainer.saveState(tmp.resolve("optimizer.safetensors"));
        if (comm != null) comm.barrier();
        if (rank == 0) {
            deleteTree(old);
            try {
                if (Files.exists(cur)) Files.move(cur, old, StandardCopyOption.ATOMIC_MOVE);
                Files.move(tmp, cur, StandardCopyOption.ATOMIC_MOVE);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot save state in " + dir + ": " + dev.limactl.data.IoErrors.why(e), e);
            }
            deleteTree(old);
        }
        if (comm != null) comm.barrier();
        return cur;
    }

    static String shardFile(int rank, int world) {
        return "optimizer-rank" + rank + "-of" + world + ".safetensors";
    }

    /**
     * Loads the optimiser state of a saved state into this rank's trainer: the whole state, or this
     * rank's own shard when the state was sharded by as many ranks, or else every rank's shard,
     * assembled and re-cut for this job's number of ranks.
     */
    void loadOptimizerState(Trainer trainer, Path state, Placement place, int zeroStage) {
        Path whole = state.resolve("optimizer.safetensors");
        if (Files.exists(whole)) {
            trainer.loadState(whole);
            return;
        }
        Path mine = state.resolve(shardFile(place.rank(), place.world()));
        // this rank's own shard: saved by as many ranks, cut the same way (one flat shard at stages 1-2, per unit at 3)
        int savedStage = readJson(state.resolve("trainer.json")).path("zero_stage").asInt(0);
        if (place.distributed() && zeroStage >= 1 && (savedStage == 3) == (zeroStage == 3) && Files.exists(mine)) {
            trainer.loadState(mine);
            return;
        }
        int world = readJson(state.resolve("trainer.json")).path("world").asInt(1);
        List<Path> shards = new ArrayList<>();
        for (int r = 0; r < world; r++) shards.add(state.resolve(shardFile(r, world)));
        for (Path p : shards) {
            if (!Files.exists(p)) throw new RunStateException(state + " lacks " + p.getFileName() + " of its " + world + " optimiser shards");
        }
        trainer.loadStateShards(shards);
    }

    Path checkpointDir(int epoch) {
        return dir.resolve("checkpoints").resolve(String.format("epoch-%02d", epoch));
    }

    /**
     * The weights into dir, called by every rank: a LoRA run's adapter (PEFT's format, fp32) by rank 0;
     * else the trainer's model, written by rank 0 (at ZeRO-3 every rank takes part, the weights gathered
     * unit by unit as they are written; below, the others have nothing to do).
     */
    private void saveWeights(Model model, Trainer trainer, Path dir, Dtype dtype, int rank) {
        if (adapterBase == null) trainer.saveModel(dir, dtype, 0, 0);
        else if (rank == 0) model.saveAdapter(dir, adapterBase.toAbsolutePath().toString());
    }

    /**
     * checkpoints/epoch-NN, called by every rank (rank 0 writes): the Hugging Face checkpoint (a LoRA run:
     * the adapter), its tokenizer and limactl.json.
     */
    Path saveCheckpoint(Model model, Trainer trainer, int rank, Dtype dtype, Path tokenizer, int eot, int epoch, long step,
                        double devPerplexity, java.util.function.Consumer<String> warn) {
        Path ck = checkpointDir(epoch);
        saveWeights(model, trainer, ck, dtype, rank);
        if (rank != 0) return ck;
        copyTokenizer(tokenizer, ck);
        writeHfFiles(ck, tokenizer, eot, model.config().maxPositionEmbeddings(), warn);
        Checkpoint.lima(eot, epoch, step).write(ck, devPerplexity);
        return ck;
    }

    /**
     * The tokenizer into a checkpoint directory: every tokenizer file of the model directory it comes
     * from (tokenizer.model and/or tokenizer.json, tokenizer_config.json, special_tokens_map.json,
     * added_tokens.json, as the base had them); a tokenizer given as a file of another name is copied
     * under its standard name.
     */
    void copyTokenizer(Path tokenizer, Path dir) {
        Path file = dev.limactl.tokenizer.Tokenizer.file(tokenizer);
        String name = file.getFileName().toString();
        if (!dev.limactl.tokenizer.Tokenizer.FILES.contains(name)) {
            copy(file, dir.resolve(name.endsWith(".json") ? "tokenizer.json" : "tokenizer.model"));
            return;
        }
        Path from = file.toAbsolutePath().getParent();
        for (String f : dev.limactl.tokenizer.Tokenizer.FILES) {
            if (Files.isRegularFile(from.resolve(f))) copy(from.resolve(f), dir.resolve(f));
        }
    }

    /** tokenizer.json with EOT, tokenizer_config.json with the chat template, generation_config.json (HfTokenizerFiles). */
    static void writeHfFiles(Path ck, Path tokenizer, int eot, int maxPositions, java.util.function.Consumer<String> warn) {
        try (dev.limactl.tokenizer.Tokenizer tok = dev.limactl.tokenizer.Tokenizer.open(tokenizer)) {
            dev.limactl.tokenizer.HfTokenizerFiles.write(ck, tok, eot, maxPositions, warn);
        }
    }

    /** Deletes the epoch checkpoints up to {@code epoch} that {@code keep} does not keep; returns them. */
    List<Path> pruneCheckpoints(dev.limactl.config.KeepRule keep, int epoch) {
        List<Path> pruned = new ArrayList<>();
        for (int k = 1; k <= epoch; k++) {
            Path ck = checkpointDir(k);
            if (!keep.keeps(k, epoch) && Files.exists(ck)) {
                deleteTree(ck);
                pruned.add(ck);
            }
        }
        return pruned;
    }

    /** After a crash between a metrics line and the next state save, drop the lines the resume will redo. */
    void keepMetricsUpTo(long step) {
        Path metrics = metrics();
        if (!Files.exists(metrics)) return;
        try {
            List<String> lines = Files.readAllLines(metrics), keep = new ArrayList<>();
            for (int i = 0; i < lines.size(); i++) {
                String line = lines.get(i);
                if (line.isBlank()) continue;
                JsonNode n;
                try {
                    n = JSON.readTree(line);
                } catch (IOException torn) {
                    if (i == lines.size() - 1) break;  // the last line, cut by a kill: the resume redoes that step
                    throw new RunStateException(metrics + ":" + (i + 1) + " is not a metrics line: " + dev.limactl.data.DataFormatException.reason(torn));
                }
                if (n.path("step").asLong() <= step) keep.add(line);
            }
            AtomicFiles.writeString(metrics, keep.isEmpty() ? "" : String.join("\n", keep) + "\n");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + metrics + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    /** Removes what a new run writes before its first state (its config.yaml and empty metrics). */
    void forgetUnstartedRun() {
        try {
            Files.deleteIfExists(config());
            if (Files.exists(metrics()) && Files.size(metrics()) == 0) Files.delete(metrics());
            deleteTree(dir.resolve("embedded"));  // extracted again by the next start
            try (Stream<Path> left = Files.list(dir)) {
                if (left.findAny().isEmpty()) Files.delete(dir);
            }
        } catch (IOException | UncheckedIOException e) {
            // best effort: the original error is what the user needs to see
        }
    }

    /**
     * Deletes the temporaries an interrupted save left (NAME.tmp-PID beside checkpoint files, and
     * state.tmp): they are never complete and are written anew by the next save.
     */
    void removeStaleTemporaries() {
        if (!Files.exists(dir)) return;
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.filter(Files::isRegularFile).filter(p -> p.getFileName().toString().matches(".*\\.tmp(-[0-9]+)?")).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot clean temporaries in " + dir + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        deleteTree(dir.resolve("state.tmp"));
    }

    /** "embedded:demo/x" names a resource shipped in the jar; it is copied into the run directory. */
    Path resolve(String path) {
        if (!path.startsWith("embedded:")) return Path.of(path);
        String res = path.substring("embedded:".length());
        Path dst = dir.resolve("embedded").resolve(res);
        if (!Files.exists(dst)) {
            try (InputStream in = RunDirectory.class.getResourceAsStream("/dev/limactl/" + res)) {
                if (in == null) throw new RunStateException("no embedded resource " + res);
                mkdirs(dst.getParent());
                Files.copy(in, dst);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot extract " + res + ": " + dev.limactl.data.IoErrors.why(e), e);
            }
        }
        return dst;
    }

    static JsonNode readJson(Path p) {
        try {
            return JSON.readTree(p.toFile());
        } catch (IOException e) {
            throw new RunStateException("cannot read " + p + ": " + dev.limactl.data.DataFormatException.reason(e));
        }
    }

    static void mkdirs(Path p) {
        try {
            Files.createDirectories(p);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create " + p + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    private static void copy(Path from, Path to) {
        try {
            Files.copy(from, to, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot copy " + from + " to " + to + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    private static void deleteTree(Path p) {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) Files.delete(q);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot delete " + p + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }
}
