package dev.limactl.annotate;

import io.javalin.Javalin;
import io.javalin.http.Context;
import io.javalin.http.HttpStatus;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The annotation web app on an embedded Javalin (Jetty) server. Annotators enter by their token
 * link ({@code /a/TOKEN}); the owner's results page is {@code /owner/TOKEN}. Every form field is
 * checked on the server ({@link Study#answer}); each form carries a CSRF token derived from the
 * study's secret and the annotator's token, and a cross-origin post is refused; an answer is
 * committed to the study file before the page moves on.
 */
public final class StudyServer implements AutoCloseable {
    private final Javalin app;

    private StudyServer(Javalin app) {
        this.app = app;
    }

    /** Starts serving {@code study} on host:port (port 0: any free port); {@code log} gets one line per request, without tokens. */
    public static StudyServer start(Study study, String host, int port, Consumer<String> log) {
        // Javalin's own log lines (a failed start, an over-long body) would repeat what the error or the
        // access log already says, with class names: the access log and the errors are the app's
        System.setProperty("org.slf4j.simpleLogger.log.io.javalin", "off");
        Javalin app = Javalin.create(config -> {
            config.startup.showJavalinBanner = false;
            config.startup.showOldJavalinVersionWarning = false;
            config.http.maxRequestSize = 64 * 1024;  // an answer is a few fields; a note is at most 4,000 characters
            config.requestLogger.http((ctx, ms) -> log.accept(String.format(Locale.ROOT, "%s %s %d %.0f ms", ctx.method(),
                    redact(ctx.path()), ctx.statusCode(), ms)));
            config.routes.before(StudyServer::securityHeaders);
            config.routes.get("/", ctx -> ctx.html(Pages.home()));
            config.routes.get("/favicon.ico", ctx -> ctx.status(204));
            config.routes.get("/static/app.js", ctx -> resource(ctx, "app.js", "text/javascript; charset=utf-8"));
            config.routes.get("/static/app.css", ctx -> resource(ctx, "app.css", "text/css; charset=utf-8"));
            config.routes.get("/a/{token}", ctx -> annotatorPage(study, ctx));
            config.routes.post("/a/{token}/answer", ctx -> answer(study, ctx));
            config.routes.get("/owner/{token}", ctx -> {
                owner(study, ctx);
                ctx.html(Pages.owner(study, ctx.pathParam("token"), study.answers(), Results.agreement(study)));
            });
            config.routes.get("/owner/{token}/chart.png", ctx -> {
                owner(study, ctx);
                Path dir = Files.createTempDirectory("limactl-study-report");
                try {
                    Path png = Results.report(study, dir);
                    ctx.contentType("image/png").result(Files.readAllBytes(png));
                } finally {
                    try (var files = Files.list(dir)) {
                        for (Path f : files.toList()) Files.deleteIfExists(f);
                    }
                    Files.deleteIfExists(dir);
                }
            });
            config.routes.get("/owner/{token}/export.jsonl", ctx -> {
                owner(study, ctx);
                ctx.contentType("application/x-ndjson; charset=utf-8").header("Content-Disposition", "attachment; filename=\"answers.jsonl\"")
                        .result(Results.jsonl(study.answers(), study.mode() == Study.Mode.PAIRWISE));
            });
            config.routes.get("/owner/{token}/export.csv", ctx -> {
                owner(study, ctx);
                ctx.contentType("text/csv; charset=utf-8").header("Content-Disposition", "attachment; filename=\"answers.csv\"")
                        .result(Results.csv(study.answers(), study.mode() == Study.Mode.PAIRWISE));
            });
            config.routes.exception(HttpError.class, (e, ctx) -> ctx.status(e.status).html(Pages.error(e.status, e.getMessage())));
            config.routes.exception(Study.NotYours.class, (e, ctx) -> ctx.status(403).html(Pages.error(403, e.getMessage())));
            config.routes.exception(dev.limactl.train.RunStateException.class, (e, ctx) -> ctx.status(409).html(Pages.error(409, e.getMessage())));
            config.routes.exception(IllegalArgumentException.class, (e, ctx) -> ctx.status(400).html(Pages.error(400, e.getMessage())));
            config.routes.exception(Exception.class, (e, ctx) -> {
                log.accept("error: " + e);
                ctx.status(500).html(Pages.error(500, "the server could not do this: " + e.getMessage()));
            });
            config.routes.error(404, ctx -> {
                if (ctx.result() == null) ctx.html(Pages.error(404, "no such page"));
            });
            config.routes.error(405, ctx -> ctx.html(Pages.error(405, "method not allowed")));
        });
        try {
            app.start(host, port);
        } catch (RuntimeException e) {
            app.stop();
            Throwable c = e;
            while (c.getCause() != null && !(c instanceof java.net.BindException)) c = c.getCause();
            if (c instanceof java.net.BindException) {
                throw new UncheckedIOException("cannot listen on " + host + ":" + port + ": " + c.getMessage()
                        + " (another server on that port? choose another with --port)", new IOException(c));
            }
            throw e;
        }
        return new StudyServer(app);
    }

    public int port() {
        return app.port();
    }

    @Override
    public void close() {
        app.stop();
    }

    /** An error page with a status, thrown from a handler. */
    static final class HttpError extends RuntimeException {
        final int status;

        HttpError(int status, String message) {
            super(message);
            this.status = status;
        }
    }

    /** Tokens never reach the log: /a/TOKEN/answer is logged as /a/.../answer. */
    static String redact(String path) {
        return path.replaceAll("^/(a|owner)/[^/]+", "/$1/...");
    }

    private static void securityHeaders(Context ctx) {
        ctx.header("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
                + " form-action 'self'; base-uri 'none'; frame-ancestors 'none'");
        ctx.header("X-Content-Type-Options", "nosniff");
        ctx.header("X-Frame-Options", "DENY");
        ctx.header("Referrer-Policy", "no-referrer");  // the token is in the URL
        ctx.header("Cache-Control", "no-store");
    }

    private static void resource(Context ctx, String name, String type) throws IOException {
        try (InputStream in = StudyServer.class.getResourceAsStream(name)) {
            if (in == null) throw new HttpError(404, "no such file");
            ctx.contentType(type).result(in.readAllBytes());
        }
    }

    private static String annotatorOf(Study study, Context ctx) {
        String name = study.annotatorOf(ctx.pathParam("token"));
        if (name == null) throw new HttpError(404, "unknown link: ask the study owner for yours");
        return name;
    }

    private static void owner(Study study, Context ctx) {
        if (!study.isOwner(ctx.pathParam("token"))) throw new HttpError(404, "unknown link: ask the study owner for yours");
    }

    /** The form token: HMAC-SHA256 of the annotator's token under the study's secret. */
    static String csrf(Study study, String token) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(study.secret().getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
            return Base64.getUrlEncoder().withoutPadding().encodeToString(mac.doFinal(("csrf:" + token).getBytes(StandardCharsets.UTF_8)));
        } catch (java.security.GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available", e);
        }
    }

    private static void annotatorPage(Study study, Context ctx) {
        String token = ctx.pathParam("token");
        String name = annotatorOf(study, ctx);
        List<Study.Shown> queue = study.queue(name);
        Study.Shown cur = null;
        String item = ctx.queryParam("item"), after = ctx.queryParam("after");
        if (item != null) {
            int id = intParam("item", item);
            cur = queue.stream().filter(s -> s.itemId() == id).findFirst()
                    .orElseThrow(() -> new Study.NotYours("item " + id + " is not one of " + name + "'s items"));
        } else {
            int from = after == null ? 0 : intParam("after", after);
            // the first open item after the given position, wrapping around: skipped items come back at the end
            for (int pass = 0; pass < 2 && cur == null; pass++) {
                for (Study.Shown s : queue) {
                    if (s.choice() == null && (pass == 1 || s.position() > from)) {
                        cur = s;
                        break;
                    }
                }
            }
            if (cur == null) {
                ctx.html(Pages.done(token, name, queue));
                return;
            }
        }
        ctx.html(Pages.item(study.mode(), token, csrf(study, token), name, queue, cur, study.guidelines()));
    }

    private static void answer(Study study, Context ctx) {
        String token = ctx.pathParam("token");
        String name = annotatorOf(study, ctx);
        String origin = ctx.header("Origin");
        if (origin != null && !origin.equals("null") && !sameOrigin(origin, ctx)) throw new HttpError(403, "cross-origin form post refused");
        String csrf = ctx.formParam("csrf");
        if (csrf == null || !MessageDigest.isEqual(csrf.getBytes(StandardCharsets.UTF_8), csrf(study, token).getBytes(StandardCharsets.UTF_8))) {
            throw new HttpError(403, "missing or wrong form token: reload the page and answer again");
        }
        String item = ctx.formParam("item");
        if (item == null) throw new IllegalArgumentException("item is missing");
        int id = intParam("item", item);
        String secs = ctx.formParam("seconds");
        Double seconds = null;
        if (secs != null && !secs.isBlank()) {
            try {
                seconds = Double.parseDouble(secs.strip());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("seconds must be a number, got '" + (secs.length() > 20 ? secs.substring(0, 20) + "..." : secs) + "'");
            }
        }
        int pos = study.answer(name, id, ctx.formParam("choice"), seconds, ctx.formParam("note"));
        ctx.redirect("/a/" + token + "?after=" + pos, HttpStatus.SEE_OTHER);
    }

    private static boolean sameOrigin(String origin, Context ctx) {
        String host = ctx.header("Host");
        return host != null && (origin.equals("http://" + host) || origin.equals("https://" + host));
    }

    private static int intParam(String name, String v) {
        try {
            return Integer.parseInt(v.strip());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + " must be an item number, got '" + (v.length() > 20 ? v.substring(0, 20) + "..." : v) + "'");
        }
    }
}
