package dev.limactl.serve;

import dev.limactl.engine.Model;
import dev.limactl.engine.ModelConfig;
import dev.limactl.generate.Answerer;
import dev.limactl.tokenizer.Tokenizer;
import java.nio.file.Path;

/** A started server over a random 2-layer model and the demo tokenizer (256-token context) for the serve tests. */
record TinyServer(Tokenizer tok, Model model, OpenAiServer server) implements AutoCloseable {

    static TinyServer start(String name, int maxBatch) {
        return start(name, maxBatch, null, 256, 9);
    }

    /** With an API key (null: none), a context and the random model's seed. */
    static TinyServer start(String name, int maxBatch, String key, int context, long seed) {
        Tokenizer tok = Tokenizer.open(Path.of("../src/main/resources/dev/limactl/demo/tokenizer.model"));
        Model model = Model.random(ModelConfig.llama(1025, 32, 64, 2, 4, 2, context), seed);
        TinyServer t;
        try {
            t = new TinyServer(tok, model, new OpenAiServer(new Answerer(model, tok, 1024, context), name, "127.0.0.1", 0, key, maxBatch));
        } catch (java.io.IOException | RuntimeException e) {
            model.close();
            tok.close();
            throw new IllegalStateException("cannot start the test server", e);
        }
        t.server.start();
        return t;
    }

    int port() {
        return server.port();
    }

    @Override
    public void close() {
        server.close();
        model.close();
        tok.close();
    }
}
