package dev.limactl.checkpoint;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.data.AtomicFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * What limactl records beside the weights of a checkpoint it wrote, in {@code limactl.json}: LIMA's
 * EOT token id (a token limactl added to the vocabulary), the chat format the model was trained
 * with, and the epoch and optimiser step it was saved at. A plain Hugging Face checkpoint has none.
 */
public record Checkpoint(int eotTokenId, String chatFormat, int epoch, long step) {
    /** The file name, in the checkpoint directory. */
    public static final String FILE = "limactl.json";
    /** BOS, then each utterance followed by EOT (ChatFormat). */
    public static final String LIMA_CHAT_FORMAT = "lima-eot-1";

    private static final ObjectMapper JSON = new ObjectMapper();

    public Checkpoint {
        if (eotTokenId < 0) throw new IllegalArgumentException("eot_token_id must be >= 0, got " + eotTokenId);
    }

    /** A checkpoint of LIMA's chat format. */
    public static Checkpoint lima(int eotTokenId, int epoch, long step) {
        return new Checkpoint(eotTokenId, LIMA_CHAT_FORMAT, epoch, step);
    }

    /**
     * The record of a checkpoint directory, empty when it has no limactl.json. A file that cannot be
     * read or lacks a valid eot_token_id is an error naming the file.
     */
    public static Optional<Checkpoint> read(Path dir) {
        Path meta = dir.resolve(FILE);
        if (!Files.exists(meta)) return Optional.empty();
        JsonNode j;
        try {
            j = JSON.readTree(meta.toFile());
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new IllegalArgumentException(meta + " is not valid JSON: " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new java.io.UncheckedIOException("cannot read " + meta + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        JsonNode eot = j == null ? null : j.get("eot_token_id");
        if (eot == null || !eot.canConvertToInt() || !eot.isIntegralNumber() || eot.asInt() < 0) {
            throw new IllegalArgumentException(meta + ": eot_token_id must be a non-negative integer, got " + eot);
        }
        return Optional.of(new Checkpoint(eot.asInt(), j.path("chat_format").asText(LIMA_CHAT_FORMAT), j.path("epoch").asInt(0),
                j.path("step").asLong(0)));
    }

    /** The EOT id, checked against the model's vocabulary: an id outside it is an error naming both. */
    public int eotWithin(int vocabSize, Path dir) {
        if (eotTokenId >= vocabSize) {
            throw new IllegalArgumentException(dir.resolve(FILE) + ": eot_token_id " + eotTokenId
                    + " is outside the model's vocabulary of " + vocabSize);
        }
        return eotTokenId;
    }

    /** Writes limactl.json into dir (atomically). */
    public void write(Path dir) {
        write(dir, Double.NaN);
    }

    /** Writes limactl.json into dir (atomically), with the dev perplexity of these weights when there is one. */
    public void write(Path dir, double devPerplexity) {
        var o = JSON.createObjectNode().put("eot_token_id", eotTokenId).put("chat_format", chatFormat).put("epoch", epoch).put("step", step);
        if (Double.isFinite(devPerplexity)) o.put("dev_perplexity", devPerplexity);
        AtomicFiles.writeString(dir.resolve(FILE), o.toPrettyString());
    }
}
