package dev.limactl.cli;

import dev.limactl.data.Turn;
import dev.limactl.generate.Answerer;
import dev.limactl.generate.ModelDir;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "chat", mixinStandardHelpOptions = true,
        description = {"Talk with a model in the terminal: multi-turn, history kept, answers streamed.",
                "Commands: /reset forgets the conversation, /exit (or end of input) quits."})
public final class ChatCommand implements Callable<Integer> {
    @Mixin ModelOptions modelOptions;




    @Mixin SamplingOptions sampling;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        try (ModelDir md = modelOptions.open()) {
            List<Turn> history = new ArrayList<>();
            long turn = 0;
            while (true) {
                out.print("you> ");
                out.flush();
                String line = in.readLine();
                if (line == null || line.strip().equals("/exit")) break;
                if (line.strip().equals("/reset")) {
                    history.clear();
                    out.println("(conversation reset)");
                    continue;
                }
                if (line.isBlank()) continue;
                history.add(new Turn(Turn.USER, line));
                out.print("lima> ");
                out.flush();
                Answerer.Answer a = md.answerer.stream(new Answerer.Request(history, sampling.sampling(), sampling.maxNewTokens,
                        List.of(), sampling.seed + turn++), text -> {
                            out.print(text);
                            out.flush();
                        });
                out.println();
                history.add(new Turn(Turn.ASSISTANT, a.text()));
            }
        }
        return ExitCodes.OK;
    }
}
