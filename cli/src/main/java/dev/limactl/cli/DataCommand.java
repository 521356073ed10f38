package dev.limactl.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.limactl.chat.ChatFormat;
import dev.limactl.data.ArrowExamples;
import dev.limactl.data.Example;
import dev.limactl.data.ExampleFiles;
import dev.limactl.data.JsonlExamples;
import dev.limactl.data.curate.Curator;
import dev.limactl.tokenizer.Tokenizer;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "data", mixinStandardHelpOptions = true, description = "Inspect and convert example files (.arrow, .jsonl).",
        subcommands = {DataCommand.Stats.class, DataCommand.Show.class, DataCommand.Import.class, DataCommand.Export.class})
public final class DataCommand implements Runnable {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    @Command(name = "stats", mixinStandardHelpOptions = true, description = "Counts and mean prompt/response lengths per source.")
    static final class Stats implements Callable<Integer> {
        @Parameters(description = "Example file") Path file;

        @Option(names = "--tokenizer", description = "Also report lengths in tokens.") Path tokenizer;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws Exception {
            List<Example> ex = ExampleFiles.read(file, "train");
            for (int i = 0; i < ex.size(); i++) {
                if (ex.get(i).turns().size() < 2) {
                    throw new dev.limactl.data.DataFormatException(file + ": example " + (i + 1) + " (id " + ex.get(i).id()
                            + ") has only a prompt; stats need prompt/response pairs");
                }
            }
            ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
            if (tokenizer == null) {
                spec.commandLine().getOut().println(json.writeValueAsString(Curator.stats(ex, null)));
            } else {
                try (Tokenizer tok = Tokenizer.open(tokenizer)) {
                    spec.commandLine().getOut().println(json.writeValueAsString(Curator.stats(ex, s -> tok.encode(s).length)));
                }
            }
            return ExitCodes.OK;
        }
    }

    @Command(name = "show", mixinStandardHelpOptions = true,
            description = {"Render examples exactly as the trainer sees them: BOS, utterances with EOT,",
                    "target (loss-masked) tokens inside [[...]]."})
    static final class Show implements Callable<Integer> {
        @Parameters(description = "Example file") Path file;

        @Option(names = {"-t", "--tokenizer"}, required = true, description = "The model's tokenizer.") Path tokenizer;

        @Option(names = "--index", defaultValue = "0", description = "First example (default ${DEFAULT-VALUE}).") int index;

        @Option(names = "--count", defaultValue = "1", description = "How many (default ${DEFAULT-VALUE}).") int count;

        @Option(names = "--max-tokens", defaultValue = "2048", description = "Trim like the trainer (default ${DEFAULT-VALUE}).") int maxTokens;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            List<Example> ex = ExampleFiles.read(file, "train");
            if (index < 0 || index >= ex.size()) throw new IllegalArgumentException("--index " + index + " is outside [0, " + ex.size() + ")");
            PrintWriter out = spec.commandLine().getOut();
            try (Tokenizer tok = Tokenizer.open(tokenizer)) {
                ChatFormat f = new ChatFormat(tok, ChatFormat.eotIdFor(tok), maxTokens);
                for (int i = index; i < Math.min(ex.size(), index + count); i++) {
                    ChatFormat.Encoded e = f.encode(ex.get(i).turns());
                    out.printf("=== %s (%s, %s): %d tokens, %d targets%s%n", ex.get(i).id(), ex.get(i).source(), ex.get(i).split(),
                            e.length(), e.targets(), e.trimmed() > 0 ? ", " + e.trimmed() + " trimmed" : "");
                    out.println(f.show(e));
                }
            }
            return ExitCodes.OK;
        }
    }

    @Command(name = "import", mixinStandardHelpOptions = true,
            description = {"Examples in the formats users have -> Arrow example file: .jsonl (LIMA, ShareGPT, chat/OpenAI messages,",
                    "Alpaca), .json (an array of those), .arrow or .parquet tables or Hugging Face datasets folders with those columns.",
                    "System messages go before the next user message, followed by a blank line (LIMA has no system role)."})
    static final class Import implements Callable<Integer> {
        @Parameters(index = "0", description = "Input file or Hugging Face datasets folder") Path in;

        @Parameters(index = "1", description = "Output .arrow") Path out;

        @Option(names = "--split", defaultValue = "train", description = "Split of examples that do not say (default ${DEFAULT-VALUE}).") String split;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            List<Example> ex = ExampleFiles.read(in, split);
            ArrowExamples.write(out, ex);
            spec.commandLine().getOut().printf("%d examples -> %s%n", ex.size(), out);
            return ExitCodes.OK;
        }
    }

    @Command(name = "export", mixinStandardHelpOptions = true,
            description = {"Example file -> LIMA jsonl (default), chat JSONL (--format chat: messages of role and content) or a",
                    "Parquet table of chat rows (--format parquet, or an output named .parquet); lossless."})
    static final class Export implements Callable<Integer> {
        @Parameters(index = "0", description = "Input (.arrow, or any format import reads)") Path in;

        @Parameters(index = "1", description = "Output .jsonl (or .parquet)") Path out;

        @Option(names = "--format", description = "lima, chat or parquet (default: parquet for a .parquet output, else lima).") String format;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            String f = format != null ? format : dev.limactl.data.ParquetExamples.isParquet(out) ? "parquet" : "lima";
            if (!List.of("lima", "chat", "parquet").contains(f)) throw new IllegalArgumentException("--format must be lima, chat or parquet, got \"" + f + "\"");
            List<Example> ex = ExampleFiles.read(in, "train");
            if (f.equals("parquet")) dev.limactl.data.ParquetExamples.write(out, ex);
            else JsonlExamples.write(out, ex, f.equals("chat"));
            spec.commandLine().getOut().printf("%d examples -> %s%n", ex.size(), out);
            return ExitCodes.OK;
        }
    }
}
