package dev.limactl.generate;

import dev.limactl.chat.ChatFormat;
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

    /** Opens the model on a device: "cpu", "cuda" or "cuda:N" (decoding then runs on that GPU). */
    public ModelDir(Path dir, Path tokenizerPath, int contextLength, String device) {
        Tokenizer tok = Tokenizer.open(tokenizerPath != null ? tokenizerPath : dir);
        Model m;
        try {
            m = Model.load(dir, device);
        } catch (RuntimeException e) {
            tok.close();
            throw e;
        }
        this.model = m;
        this.tokenizer = tok;
        int eot;
        try {
            eot = Checkpoint.read(dir).map(c -> c.eotWithin(m.config().vocabSize(), dir)).orElse(ChatFormat.eotIdFor(tok));
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
