package dev.limactl.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Clients that open a request and never finish sending it are cut off after the request time limit
 * and do not hold up anyone else. The limit is the JDK server's, read once per JVM, so the server
 * runs in a fresh JVM here with a 2 s limit instead of the default 30 s.
 */
class SlowClientTest {

    /** The forked server: prints its port, then serves until its stdin closes. */
    public static void main(String[] args) throws Exception {
        try (TinyServer server = TinyServer.start("slow", 4)) {
            System.out.println("port " + server.port());
            System.out.flush();
            System.in.read();
        }
    }

    @Test
    void theServerSetsARequestTimeLimitByDefault() throws Exception {
        try (TinyServer server = TinyServer.start("slow", 4)) {
            assertTrue(System.getProperty("sun.net.httpserver.maxReqTime") != null, "no request time limit set");
        }
    }

    @Test
    void slowBodiesAreCutOffAndOthersAreServedMeanwhile() throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(java, "-Dsun.net.httpserver.maxReqTime=2", "-cp", System.getProperty("java.class.path"),
                SlowClientTest.class.getName()).redirectErrorStream(true).start();
        List<Socket> slow = new ArrayList<>();
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            String line;
            int port = -1;
            while ((line = out.readLine()) != null) {
                if (line.startsWith("port ")) { port = Integer.parseInt(line.substring(5).trim()); break; }
            }
            assertTrue(port > 0, "the server did not start");
            // 40 connections that promise a 1 MB body and send 10 bytes of it
            for (int i = 0; i < 40; i++) {
                Socket s = new Socket("127.0.0.1", port);
                s.setSoTimeout(20_000);
                OutputStream o = s.getOutputStream();
                o.write(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"message").getBytes(StandardCharsets.US_ASCII));
                o.flush();
                slow.add(s);
            }
            HttpClient http = HttpClient.newHttpClient();
            long t0 = System.nanoTime();
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/v1/chat/completions"))
                    .timeout(Duration.ofSeconds(30)).POST(HttpRequest.BodyPublishers.ofString(
                            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 4}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode(), r.body());
            assertTrue((System.nanoTime() - t0) / 1e9 < 20, "a valid request waited on the slow ones");
            for (Socket s : slow) {
                long start = System.nanoTime();
                int got;
                try {
                    got = s.getInputStream().read();
                } catch (java.net.SocketException e) {
                    got = -1;  // reset: closed as well
                }
                assertEquals(-1, got, "a slow connection got an answer instead of being closed");
                assertTrue((System.nanoTime() - start) / 1e9 < 15, "a slow connection stayed open");
            }
        } finally {
            for (Socket s : slow) s.close();
            p.getOutputStream().close();
            if (!p.waitFor(30, TimeUnit.SECONDS)) p.destroyForcibly();
        }
    }
}
