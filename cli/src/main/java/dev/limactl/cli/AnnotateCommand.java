package dev.limactl.cli;

import dev.limactl.annotate.Results;
import dev.limactl.annotate.Study;
import dev.limactl.annotate.StudyServer;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import picocli.CommandLine;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "annotate", mixinStandardHelpOptions = true,
        description = {"LIMA's human evaluation (Section 4, Appendix C) as a web app: create a study from answer files, serve it to",
                "annotators (each by a token link), export their verdicts for eval agreement, chart the results."},
        subcommands = {AnnotateCommand.Create.class, AnnotateCommand.Serve.class, AnnotateCommand.Export.class, AnnotateCommand.Report.class})
public final class AnnotateCommand implements Runnable {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "annotate: name a subcommand: create, serve, export or report");
    }

    /** The annotators' guidelines when none are given: the paper's instructions, in short (Appendix C). */
    static final String DEFAULT_GUIDELINES = """
            **Pairwise:** read the prompt and both responses, then say which response is better, or that neither is significantly better.
            Judge helpfulness first: does the response do what the prompt asks, correctly and completely? Then clarity and harmlessness.
            Length is not quality: a short correct answer beats a long padded one. The sides are random; which model wrote what is hidden.

            **Absolute:** grade the one response. *Fail*: it does not meet the prompt's requirements. *Pass*: it meets them.
            *Excellent*: it meets them and is as good as a response could reasonably be.

            Keys: `1` / `2` / `3` (A, B, neither) or `f` / `p` / `e`; `s` skips an item for later; `g` opens these guidelines.
            """;

    static final class Inputs {
        @Option(names = "--pairs", arity = "2", paramLabel = "FILE", description = "Pairwise study: our answers, then the baseline's (JSONL {id, prompt, response}).")
        List<Path> pairs;

        @Option(names = "--absolute", paramLabel = "FILE", description = "Absolute study: Fail / Pass / Excellent grades of one answer file.")
        Path absolute;
    }

    @Command(name = "create", mixinStandardHelpOptions = true, description = "Create a study file (SQLite) and print each annotator's link and the owner's.")
    static final class Create implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "STUDY", description = "The study file to create (e.g. study.db).") Path file;

        @ArgGroup(exclusive = true, multiplicity = "1") Inputs inputs;

        @Option(names = "--annotators", split = ",", defaultValue = "annotator1",
                description = "Comma-separated annotator names (default ${DEFAULT-VALUE}).") List<String> annotators;

        @Option(names = "--overlap", defaultValue = "50",
                description = "Items every annotator sees, for agreement (default ${DEFAULT-VALUE}, as many as there are if fewer); the rest are shared out.")
        int overlap;

        @Option(names = "--guidelines", description = "Markdown shown to annotators (default: the paper's instructions, in short).") Path guidelines;

        @Option(names = "--seed", defaultValue = "0", description = "Seed of the item orders and sides (default ${DEFAULT-VALUE}).") long seed;

        @Option(names = "--base-url", defaultValue = "http://127.0.0.1:8377", description = "Where serve will be reached, for the printed links (default ${DEFAULT-VALUE}).")
        String baseUrl;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            String text = DEFAULT_GUIDELINES;
            if (guidelines != null) {
                try {
                    text = dev.limactl.data.Utf8Text.read(guidelines);
                } catch (java.nio.file.NoSuchFileException e) {
                    throw new IllegalArgumentException("--guidelines: " + guidelines + " does not exist");
                } catch (java.io.IOException e) {
                    throw new java.io.UncheckedIOException("cannot read " + guidelines + ": " + dev.limactl.data.IoErrors.why(e), e);
                }
            }
            Study.Spec s = inputs.pairs != null
                    ? new Study.Spec(Study.Mode.PAIRWISE, inputs.pairs.get(0), inputs.pairs.get(1), annotators, overlap, text, seed)
                    : new Study.Spec(Study.Mode.ABSOLUTE, inputs.absolute, null, annotators, overlap, text, seed);
            Study study = Study.create(file, s);
            PrintWriter out = spec.commandLine().getOut();
            out.printf("created %s: %d items, %s mode, %d annotator(s)%n", file, study.itemCount(), study.mode().name().toLowerCase(),
                    study.annotators().size());
            links(out, study, baseUrl);
            out.printf("serve it with: limactl annotate serve %s%n", file);
            return ExitCodes.OK;
        }
    }

    static void links(PrintWriter out, Study study, String base) {
        for (Study.Annotator a : study.annotators()) {
            out.printf("  annotator %-12s %s/a/%s  (%d items)%n", a.name(), base, a.token(), study.queue(a.name()).size());
        }
        out.printf("  owner (results)        %s/owner/%s%n", base, study.ownerToken());
    }

    @Command(name = "serve", mixinStandardHelpOptions = true,
            description = {"Serve a study to its annotators (loopback unless --host says otherwise); Ctrl-C stops it.",
                    "Every answer is in the study file before the page moves on, so a restart loses nothing."})
    static final class Serve implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "STUDY") Path file;

        @Option(names = "--port", defaultValue = "8377", description = "Default ${DEFAULT-VALUE}; 0 picks a free port.") int port;

        @Option(names = "--host", defaultValue = "127.0.0.1", description = "Bind address (default ${DEFAULT-VALUE}).") String host;

        @Option(names = "--access-log", negatable = true, defaultValue = "true",
                description = "One line per request on stderr: method, path (tokens hidden), status, ms (default on).")
        boolean accessLog;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws Exception {
            if (port < 0 || port > 65535) throw new IllegalArgumentException("--port must be in [0, 65535], got " + port);
            PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
            Study study = Study.open(file);
            if (!java.net.InetAddress.getByName(host).isLoopbackAddress()) {
                err.printf("limactl: warning: serving the study on %s over plain HTTP: the links are the annotators' credentials;"
                        + " put it behind HTTPS before sharing them beyond a trusted network%n", host);
                err.flush();
            }
            java.util.function.Consumer<String> log = ServeCommand.accessLog(err, accessLog);
            try (StudyServer server = StudyServer.start(study, host, port, log)) {
                String shown = host.contains(":") ? "[" + host + "]" : host;
                out.printf("serving %s on http://%s:%d/ (%d answers so far)%n", file, shown, server.port(), study.answers().size());
                links(out, study, "http://" + shown + ":" + server.port());
                out.flush();
                CountDownLatch stop = new CountDownLatch(1);
                Runtime.getRuntime().addShutdownHook(new Thread(stop::countDown));
                stop.await();
            }
            return ExitCodes.OK;
        }
    }

    @Command(name = "export", mixinStandardHelpOptions = true,
            description = {"Write every answer (annotator, item, label, choice, shown order, seconds, note) to JSONL, or CSV for a .csv name:",
                    "the verdict format eval agreement reads (label: win/tie/loss for our model, or the grade)."})
    static final class Export implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "STUDY") Path file;

        @Option(names = "--out", required = true, description = "answers.jsonl or answers.csv") Path out;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            Study study = Study.open(file);
            int n = Results.export(study, out);
            spec.commandLine().getOut().printf("wrote %d answers of %d annotator(s) to %s%n", n, study.annotators().size(), out);
            return ExitCodes.OK;
        }
    }

    @Command(name = "report", mixinStandardHelpOptions = true,
            description = "The human verdicts as the paper's Figure 1 (win / tie / loss) or grade counts, with agreement between annotators.")
    static final class Report implements Callable<Integer> {
        @Parameters(index = "0", paramLabel = "STUDY") Path file;

        @Option(names = "--out", required = true, description = "Directory for human-pairwise.{json,md,png,svg} (or human-absolute.*).") Path out;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            Study study = Study.open(file);
            Path png = Results.report(study, out);
            PrintWriter o = spec.commandLine().getOut();
            for (var p : Results.agreement(study)) {
                EvalCommand.printAgreement(o, p.a() + " / " + p.b(), p.agreement());
            }
            o.printf("report: %s%n", png);
            return ExitCodes.OK;
        }
    }
}
