package dev.limactl.train;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * The key-value server of a {@code tcp://HOST:PORT/JOB} rendezvous, started by rank 0 on its own host
 * and stopped once every rank has met: a redis-server, the server Gloo's RedisStore (the store the
 * communicator plugin uses) talks to. A watcher ends it if this process dies first (kill -9), so no
 * server outlives its job.
 */
public final class RendezvousServer implements AutoCloseable {
    private static final java.util.regex.Pattern PROCESS_ID = java.util.regex.Pattern.compile("process_id:(\\d+)");
    private final Process process;

    private RendezvousServer(Process process) {
        this.process = process;
    }

    /** Starts the server for rendezvous {@code rv} (tcp://HOST:PORT/JOB), its output in {@code log}; waits until it answers. */
    public static RendezvousServer start(String rv, Path log, Duration timeout) {
        String rest = rv.substring("tcp://".length());
        int slash = rest.indexOf('/'), colon = rest.lastIndexOf(':', slash < 0 ? rest.length() : slash);
        if (colon <= 0 || slash < 0) throw new IllegalArgumentException("rendezvous \"" + rv + "\": expected tcp://HOST:PORT/JOB");
        String host = rest.substring(0, colon), portText = rest.substring(colon + 1, slash);
        int port;
        try {
            port = Integer.parseInt(portText);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("rendezvous \"" + rv + "\": port \"" + portText + "\" is not a number");
        }
        if (port < 1 || port > 65535) throw new IllegalArgumentException("rendezvous \"" + rv + "\": port " + port + " is not in 1-65535");
        String ip;
        try {
            ip = InetAddress.getByName(host.replaceAll("^\\[|\\]$", "")).getHostAddress();  // redis-server binds addresses, not names
        } catch (IOException e) {
            throw new IllegalArgumentException("rendezvous host \"" + host + "\" (MASTER_ADDR) does not resolve: " + e.getMessage());
        }
        String where = host + ":" + port;
        long parent = ProcessHandle.current().pid();
        // sh: the server, and a watcher that ends it when this JVM is gone (nothing in Java can ask
        // the kernel to end a child with its parent)
        String script = "redis-server --bind \"$1\" --port \"$2\" --save '' --appendonly no --protected-mode no --loglevel warning & r=$!; "
                + "while kill -0 \"$3\" 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 1; done; kill $r 2>/dev/null; wait $r";
        Process p;
        try {
            Files.createDirectories(log.getParent());
            p = new ProcessBuilder(List.of("/bin/sh", "-c", script, "rendezvous", ip, Integer.toString(port), Long.toString(parent)))
                    .redirectErrorStream(true).redirectOutput(log.toFile()).start();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start the rendezvous server for " + where + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        RendezvousServer s = new RendezvousServer(p);
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!s.answers(ip, port)) {
            if (!p.isAlive() || System.nanoTime() > deadline) {
                s.close();
                String out = "";
                try {
                    out = Files.readString(log).strip();
                } catch (IOException ignored) {
                    // the log is only for the message
                }
                if (out.contains("not found")) out = "redis-server is not installed on rank 0's host (Debian: apt-get install redis-server)";
                String msg = "cannot start the rendezvous server at " + where + (out.isEmpty() ? "" : ": " + lastLines(out))
                        + " (or use a directory every rank reaches: distributed.rendezvous file:DIR)";
                throw new UncheckedIOException(msg, new IOException(msg));
            }
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                s.close();
                throw new UncheckedIOException(new java.io.InterruptedIOException("interrupted while starting the rendezvous server at " + where));
            }
        }
        return s;
    }

    /** Whether our redis-server answers at ip:port (INFO names its process: not another job's server on that port). */
    private boolean answers(String ip, int port) {
        if (!process.isAlive()) return false;
        try (Socket sock = new Socket()) {
            sock.connect(new InetSocketAddress(ip, port), 500);
            sock.setSoTimeout(1000);
            OutputStream o = sock.getOutputStream();
            o.write("INFO server\r\n".getBytes(StandardCharsets.US_ASCII));
            o.flush();
            InputStream in = sock.getInputStream();
            StringBuilder text = new StringBuilder();
            byte[] b = new byte[4096];
            java.util.regex.Matcher m = null;
            for (int n; text.length() < 65536 && (n = in.read(b)) > 0; ) {
                text.append(new String(b, 0, n, StandardCharsets.US_ASCII));
                m = PROCESS_ID.matcher(text);
                if (m.find()) break;
                m = null;
            }
            if (m == null) return false;
            long pid = Long.parseLong(m.group(1));
            return process.descendants().anyMatch(h -> h.pid() == pid);
        } catch (IOException | NumberFormatException e) {
            return false;
        }
    }

    private static String lastLines(String s) {
        String[] lines = s.split("\n");
        return String.join(" / ", java.util.Arrays.asList(lines).subList(Math.max(0, lines.length - 3), lines.length));
    }

    @Override
    public void close() {
        process.descendants().forEach(ProcessHandle::destroy);
        process.destroy();
        try {
            process.waitFor(5, java.util.concurrent.TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
