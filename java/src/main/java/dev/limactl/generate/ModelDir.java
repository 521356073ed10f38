package dev.limactl.generate;

import dev.limactl.chat.ChatFormat;
import dev.limactl.checkpoint.AdapterCheckpoint;
import dev.limactl.checkpoint.Checkpoint;
import dev.limactl.engine.Model;
import dev.limactl.tokenizer.Tokenizer;
import java.nio.file.Path;

/** A LIMA-format checkpoint directory opened for generation: model, tokenizer and the EOT id. */
public final class ModelDir implements AutoCloseable {
    public final Model model;
    public final Tokenizer tokenizer;
    public final int eotId;
    public final Answerer answerer;

    public ModelDir(Path dir, Path tokenizerPath, int contextLength) {
        this(dir, tokenizerPath, contextLength, "cpu");
    }

    /**
     * Opens the model on a device: "cpu", "cuda" or "cuda:N" (decoding then runs on that GPU). dir may
     * also be a LoRA adapter checkpoint (adapter_config.json): its base model is the one it names.
     */
    public ModelDir(Path dir, Path tokenizerPath, int contextLength, String device) {
        this(AdapterCheckpoint.isAdapter(dir) ? AdapterCheckpoint.baseOf(dir) : dir, AdapterCheckpoint.isAdapter(dir) ? dir : null,
                tokenizerPath, contextLength, device);
    }

    /**
     * A base model with a LoRA adapter served unmerged (adapter null: the model alone). The tokenizer
     * and the EOT id come from the adapter directory when it has them, else from the base.
     */
    public ModelDir(Path base, Path adapter, Path tokenizerPath, int contextLength, String device) {
        Path dir = adapter != null ? adapter : base;
        Path tokDefault = adapter != null && (java.nio.file.Files.isRegularFile(adapter.resolve("tokenizer.model"))
                || java.nio.file.Files.isRegularFile(adapter.resolve("tokenizer.json"))) ? adapter : base;
        Tokenizer tok = Tokenizer.open(tokenizerPath != null ? tokenizerPath : tokDefault);
        Model m;
        try {
            m = adapter != null ? AdapterCheckpoint.open(base, adapter, device) : Model.load(base, device);
        } catch (RuntimeException e) {
            tok.close();
            throw e;
        }
        this.model = m;
        this.tokenizer = tok;
        int eot;
        try {
            Path meta = Checkpoint.read(dir).isPresent() ? dir : base;
            eot = Checkpoint.read(meta).map(c -> c.eotWithin(m.config().vocabSize(), meta)).orElse(ChatFormat.eotIdFor(tok));
        } catch (RuntimeException e) {
            close();
            throw e;
        }
        if (eot >= m.config().vocabSize()) {
            close();
            throw new IllegalArgumentException(dir + " has no EOT token (vocabulary " + m.config().vocabSize()
                    + "): this needs a LIMA-format checkpoint (made by limactl train)");
        }
        this.eotId = eot;
        this.answerer = new Answerer(m, tok, eot, contextLength);
    }

    @Override
    public void close() {
        if (model != null) model.close();
        tokenizer.close();
    }
}
