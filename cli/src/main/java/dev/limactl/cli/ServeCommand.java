package dev.limactl.cli;

import dev.limactl.generate.ModelDir;
import dev.limactl.serve.OpenAiServer;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "serve", mixinStandardHelpOptions = true,
        description = {"Serve a model over the OpenAI chat-completions protocol (/v1/chat/completions, /v1/models),",
                "plain and streaming (SSE). Loopback only unless --host says otherwise; Ctrl-C stops it."})
public final class ServeCommand implements Callable<Integer> {
    @Mixin ModelOptions modelOptions;


    @Option(names = "--port", defaultValue = "8000", description = "Default ${DEFAULT-VALUE}; 0 picks a free port.") int port;

    @Option(names = "--host", defaultValue = "127.0.0.1", description = "Bind address (default ${DEFAULT-VALUE}).") String host;

    @Option(names = "--api-key", description = "Require 'Authorization: Bearer KEY' (default: env LIMACTL_API_KEY, else none).")
    String apiKey;

    @Option(names = "--name", description = "Model id reported to clients (default: the directory name).") String name;

    @Option(names = "--max-batch", defaultValue = "16", description = "Requests decoded together (default ${DEFAULT-VALUE}).") int maxBatch;


    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Option(names = "--access-log", negatable = true, defaultValue = "true",
            description = "One line per request on stderr: method, path, status, tokens, ms (default on; never the key or the content).")
    boolean accessLog;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        if (maxBatch < 1 || maxBatch > 1024) throw new IllegalArgumentException("--max-batch must be in [1, 1024], got " + maxBatch);
        String key = apiKey != null ? apiKey : System.getenv("LIMACTL_API_KEY");
        if (key == null && !java.net.InetAddress.getByName(host).isLoopbackAddress()) {
            err.printf("limactl: warning: serving on %s without an API key: anyone who reaches this address can use the model"
                    + " (set --api-key or LIMACTL_API_KEY)%n", host);
            err.flush();
        }
        java.util.function.Consumer<String> log = accessLog(err, accessLog);
        try (ModelDir md = modelOptions.open();
             OpenAiServer server = listen(md, key, log)) {
            server.start();
            out.printf("serving %s on http://%s:%d/v1 (OpenAI chat completions)%s%n", modelOptions.model, host, server.port(),
                    key == null ? "" : "; API key required");
            CountDownLatch stop = new CountDownLatch(1);
            Runtime.getRuntime().addShutdownHook(new Thread(stop::countDown));
            stop.await();
        }
        return ExitCodes.OK;
    }

    /** The access log of a server: one line per request on stderr, whole lines from concurrent requests; off: nothing. */
    static java.util.function.Consumer<String> accessLog(PrintWriter err, boolean on) {
        if (!on) return line -> { };
        return line -> {
            synchronized (err) {
                err.println(line);
                err.flush();
            }
        };
    }

    private OpenAiServer listen(ModelDir md, String key, java.util.function.Consumer<String> log) throws java.io.IOException {
        try {
            return new OpenAiServer(md.answerer, name != null ? name : modelOptions.model.getFileName().toString(), host, port, key, maxBatch, log);
        } catch (java.net.BindException e) {
            throw new java.io.UncheckedIOException("cannot listen on " + host + ":" + port + ": " + e.getMessage()
                    + " (another server on that port? choose another with --port)", e);
        }
    }
}
