package dev.limactl.cli;

import dev.limactl.data.Example;
import dev.limactl.data.ExampleFiles;
import dev.limactl.generate.AnswerFile;
import dev.limactl.generate.ModelDir;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "generate", mixinStandardHelpOptions = true,
        description = {"Answer the prompts of a data file (.arrow or .jsonl: each conversation up to its last user turn)",
                "and append JSONL lines {id, sample, prompt, response, finish, ...} to --out. Rerunning continues",
                "where a killed run stopped: (id, sample) pairs already in --out are skipped."})
public final class GenerateCommand implements Callable<Integer> {
    @Mixin ModelOptions modelOptions;


    @Option(names = "--prompts", required = true, description = "Examples (.arrow or .jsonl).") Path prompts;

    @Option(names = "--out", required = true, description = "Output JSONL (appended).") Path out;

    @Option(names = "--samples", defaultValue = "1", description = "Samples per prompt (default ${DEFAULT-VALUE}).") int samples;

    @Option(names = "--batch", defaultValue = "8", description = "Prompts decoded together (default ${DEFAULT-VALUE}).") int batch;



    @Mixin SamplingOptions sampling;

    @Option(names = "--mix-settings", description = "Add to an --out that holds answers of another model or other sampling settings.")
    boolean mixSettings;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        if (samples < 1 || batch < 1) throw new IllegalArgumentException("--samples and --batch must be >= 1");
        PrintWriter err = spec.commandLine().getErr();
        boolean quiet = LimactlCommand.quiet(spec.commandLine());
        List<Example> examples = ExampleFiles.read(prompts, "test");
        try (ModelDir md = modelOptions.open()) {
            AnswerFile.Stats st = AnswerFile.write(md.answerer, modelOptions.model.toString(), examples, out, samples, sampling.sampling(),
                    sampling.maxNewTokens, sampling.seed, batch, mixSettings, m -> {
                        if (!quiet || m.startsWith("resuming") || m.contains("dropped its last line")) err.println(m);
                    });
            spec.commandLine().getOut().printf("%d answers written to %s (%d generated tokens)%n", st.answered(), out, st.generatedTokens());
        }
        return ExitCodes.OK;
    }
}
