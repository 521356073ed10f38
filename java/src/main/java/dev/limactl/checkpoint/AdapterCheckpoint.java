package dev.limactl.checkpoint;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.engine.Model;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * A LoRA adapter directory in PEFT's format (adapter_config.json + adapter_model.safetensors), as
 * limactl train writes per epoch with adapter.type lora (plus the tokenizer and limactl.json), or as
 * PEFT's save_pretrained writes. Opening one loads its base model, grows the base's vocabulary by
 * LIMA's EOT token when limactl.json records it one past the base's, and attaches the adapter
 * unmerged.
 */
public final class AdapterCheckpoint {
    public static final String CONFIG = "adapter_config.json";
    private static final ObjectMapper JSON = new ObjectMapper();

    private AdapterCheckpoint() {}

    /** An adapter directory: adapter_config.json and no config.json of a full model. */
    public static boolean isAdapter(Path dir) {
        return Files.isRegularFile(dir.resolve(CONFIG)) && !Files.exists(dir.resolve("config.json"));
    }

    /** The base model an adapter names (base_model_name_or_path; a relative path is taken against the adapter directory). */
    public static Path baseOf(Path adapter) {
        Path cfg = adapter.resolve(CONFIG);
        JsonNode j;
        try {
            j = JSON.readTree(cfg.toFile());
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new IllegalArgumentException(cfg + " is not valid JSON: " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new java.io.UncheckedIOException("cannot read " + cfg + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        JsonNode base = j == null ? null : j.get("base_model_name_or_path");
        if (base == null || !base.isTextual() || base.asText().isBlank()) {
            throw new IllegalArgumentException(cfg + " names no base model (base_model_name_or_path): pass the base with --model");
        }
        Path p = adapter.resolve(base.asText());
        if (!Files.isDirectory(p)) {
            throw new IllegalArgumentException(cfg + ": its base model " + p + " is not a directory here (a hub id is not"
                    + " downloaded): pass the base with --model");
        }
        return p;
    }

    /** Loads base + adapter on device; the base's vocabulary grown by the EOT token the adapter's limactl.json records. */
    public static Model open(Path base, Path adapter, String device) {
        if (!Files.isDirectory(adapter)) throw new IllegalArgumentException("adapter directory " + adapter + " does not exist");
        Optional<Checkpoint> rec = Checkpoint.read(adapter);
        Model m = Model.load(base, device);
        try {
            int vocab = m.config().vocabSize();
            if (rec.isPresent() && rec.get().eotTokenId() == vocab) m.resizeVocab(vocab + 1);
            m.loadAdapter(adapter);
            return m;
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
    }
}
