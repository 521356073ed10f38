package dev.limactl.cli;

import dev.limactl.data.Turn;
import dev.limactl.generate.Answerer;
import dev.limactl.generate.ModelDir;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicReference;
import org.jline.reader.EndOfFileException;
import org.jline.reader.LineReader;
import org.jline.reader.LineReaderBuilder;
import org.jline.reader.UserInterruptException;
import org.jline.terminal.Terminal;
import org.jline.terminal.TerminalBuilder;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "chat", mixinStandardHelpOptions = true,
        description = {"Talk with a model in the terminal: multi-turn, answers streamed, line editing and history (JLine).",
                "Ctrl-C stops the answer being written and keeps the conversation; at the prompt it clears the line.",
                "Commands: /reset forgets the conversation, /exit (or Ctrl-D, or end of input) quits."})
public final class ChatCommand implements Callable<Integer> {
    @Mixin ModelOptions modelOptions;

    @Mixin SamplingOptions sampling;

    @Option(names = "--system", description = "A system message: put before the first user message of each conversation, followed by a"
            + " blank line, as limactl serve and the checkpoint's chat template do (LIMA has no system role).")
    String system;

    @Option(names = "--history", description = "Where line history is kept (default ~/.limactl/chat-history; 'none' keeps none).")
    String history;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    /** The conversation so far (what the next answer continues). */
    final List<Turn> conversation = new ArrayList<>();

    /** Where the lines come from and the answers go: a JLine reader on a terminal, or plain lines (pipes, scripts). */
    interface Console {
        /** The next line, or null at the end; "" after Ctrl-C at the prompt. */
        String readLine(String prompt) throws IOException;

        void print(String text);

        /** Runs a cancel action on Ctrl-C while the answer is written (null: none). */
        void onInterrupt(Runnable cancel);
    }

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        try (ModelDir md = modelOptions.open()) {
            if (System.console() == null) {  // not a terminal: plain lines, no escape codes in the output
                BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
                return loop(md.answerer, new Console() {
                    @Override
                    public String readLine(String prompt) throws IOException {
                        out.print(prompt);
                        out.flush();
                        return in.readLine();
                    }

                    @Override
                    public void print(String text) {
                        out.print(text);
                        out.flush();
                    }

                    @Override
                    public void onInterrupt(Runnable cancel) {}
                });
            }
            try (Terminal t = TerminalBuilder.builder().system(true).build()) {
                return loop(md.answerer, jline(t, historyFile()));
            }
        }
    }

    private Path historyFile() {
        if ("none".equals(history)) return null;
        return history != null ? Path.of(history) : Path.of(System.getProperty("user.home"), ".limactl", "chat-history");
    }

    /** A JLine console over a terminal: editing, history kept in historyFile (null: in memory only), Ctrl-C as a signal. */
    static Console jline(Terminal t, Path historyFile) {
        LineReaderBuilder b = LineReaderBuilder.builder().terminal(t);
        if (historyFile != null) b.variable(LineReader.HISTORY_FILE, historyFile);
        LineReader reader = b.build();
        AtomicReference<Runnable> cancel = new AtomicReference<>();
        t.handle(Terminal.Signal.INT, s -> {
            Runnable c = cancel.get();
            if (c != null) c.run();
        });
        return new Console() {
            @Override
            public String readLine(String prompt) {
                try {
                    return reader.readLine(prompt);
                } catch (UserInterruptException e) {
                    return "";
                } catch (EndOfFileException e) {
                    return null;
                }
            }

            @Override
            public void print(String text) {
                t.writer().print(text);
                t.flush();
            }

            @Override
            public void onInterrupt(Runnable c) {
                cancel.set(c);
            }
        };
    }

    /** The conversation loop: each answer streamed; a stopped answer is kept as far as it got. */
    int loop(Answerer answerer, Console console) throws IOException {
        long turn = 0;
        while (true) {
            String line = console.readLine("you> ");
            if (line == null || line.strip().equals("/exit")) break;
            if (line.strip().equals("/reset")) {
                conversation.clear();
                console.print("(conversation reset)\n");
                continue;
            }
            if (line.isBlank()) continue;
            boolean first = conversation.isEmpty();
            conversation.add(new Turn(Turn.USER, first && system != null && !system.isBlank() ? system + "\n\n" + line : line));
            console.print("lima> ");
            Answerer.Prepared p;
            try {
                p = answerer.prepare(new Answerer.Request(conversation, sampling.sampling(), sampling.maxNewTokens, List.of(), sampling.seed + turn++));
            } catch (IllegalArgumentException e) {  // the conversation no longer fits the context
                conversation.remove(conversation.size() - 1);
                console.print("\n(" + e.getMessage() + "; /reset starts a new conversation)\n");
                continue;
            }
            console.onInterrupt(p::cancel);
            Answerer.Answer a;
            try {
                a = answerer.generatePrepared(List.of(p), (i, text) -> console.print(text)).get(0);
            } finally {
                console.onInterrupt(null);
            }
            console.print(a.finish().equals("cancelled") ? " (stopped)\n" : "\n");
            conversation.add(new Turn(Turn.ASSISTANT, a.text()));
        }
        return ExitCodes.OK;
    }
}
