package com.example.embed;

import dev.limactl.config.ConfigLoader;
import dev.limactl.data.Turn;
import dev.limactl.engine.Lima;
import dev.limactl.engine.Sampling;
import dev.limactl.generate.Answerer;
import dev.limactl.generate.ModelDir;
import dev.limactl.train.TrainListener;
import dev.limactl.train.TrainRun;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/** Fine-tunes one epoch with LIMA's recipe on the demo data, then streams an answer from the checkpoint. */
public final class EmbedExample {
    public static void main(String[] args) throws Exception {
        Path runDir = Path.of(args.length > 0 ? args[0] : "run");
        deleteTree(runDir);  // a fresh run each time
        System.out.println(Lima.version());

        // 1. Train: the demo preset (a small random-initialised LLaMA), one epoch, progress from a listener.
        TrainRun run = TrainRun.create(ConfigLoader.preset("demo").set(List.of("training.epochs=1")), runDir);
        TrainRun.Result result = run.run(new TrainListener() {
            @Override
            public void onStart(TrainRun.Plan plan) {
                System.out.printf("training %d examples, %d steps, %,d parameters%n", plan.examples(), plan.totalSteps(),
                        plan.numParams());
            }

            @Override
            public void onStep(TrainRun.StepMetrics m) {
                System.out.printf("step %d  loss %.4f  lr %.2e%n", m.step(), m.loss(), m.lr());
            }

            @Override
            public void onEpoch(int epoch, Path checkpoint, double devPerplexity) {
                System.out.printf("epoch %d -> %s (dev perplexity %.2f)%n", epoch, checkpoint, devPerplexity);
            }
        });
        Path checkpoint = result.checkpoints().get(result.checkpoints().size() - 1);

        // 2. Serve: load the checkpoint (model, tokenizer, LIMA's EOT) and stream an answer.
        try (ModelDir md = new ModelDir(checkpoint, null, 1024)) {
            Answerer.Request ask = new Answerer.Request(List.of(new Turn(Turn.USER, "How do I brew better coffee at home?")),
                    Sampling.lima(), 48, List.of(), 7);
            System.out.print("answer: ");
            Answerer.Answer a = md.answerer.stream(ask, piece -> {
                System.out.print(piece);
                System.out.flush();
            });
            System.out.printf("%n[%d tokens, finished by %s]%n", a.generatedTokens(), a.finish());
            if (a.generatedTokens() == 0 && !a.finish().equals("eot")) throw new IllegalStateException("no answer");
        }
    }

    private static void deleteTree(Path p) throws Exception {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) Files.delete(q);
        }
    }
}
