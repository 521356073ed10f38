package dev.limactl.generate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.limactl.data.Turn;
import dev.limactl.engine.Generator;
import dev.limactl.engine.Model;
import dev.limactl.engine.ModelConfig;
import dev.limactl.engine.Sampling;
import dev.limactl.tokenizer.Tokenizer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class AnswererTest {
    static Tokenizer tok;
    static Model model;
    static final int EOT = 1024;

    @BeforeAll
    static void open() {
        tok = Tokenizer.open(Path.of("src/main/resources/dev/limactl/demo/tokenizer.model"));
        model = Model.random(ModelConfig.llama(EOT + 1, 32, 64, 2, 4, 2, 256), 5);
    }

    @AfterAll
    static void close() {
        model.close();
        tok.close();
    }

    static List<Turn> ask(String q) {
        return List.of(new Turn(Turn.USER, q));
    }

    @Test
    void greedyAnswerIsTheDecodersArgmaxChainDecodedToText() {
        Answerer g = new Answerer(model, tok, EOT, 256);
        Answerer.Answer a = g.generate(new Answerer.Request(ask("How should I store coffee?"), Sampling.greedy(), 20, List.of(), 1));
        assertEquals("length", a.finish());
        assertEquals(20, a.generatedTokens());
        int[] prompt = new dev.limactl.chat.ChatFormat(tok, EOT, 1 << 20).prompt(ask("How should I store coffee?"));
        assertEquals(prompt.length, a.promptTokens());
        List<Integer> ids = new ArrayList<>();
        try (Generator d = new Generator(model, 1, 64)) {
            d.start(new int[][] {prompt}, new long[] {1});
            for (int i = 0; i < 20; i++) ids.add(d.step(Sampling.greedy(), null)[0]);
        }
        assertTrue(ids.stream().noneMatch(t -> t == EOT || t == tok.eosId()), ids.toString());
        assertEquals(tok.decode(ids.stream().mapToInt(Integer::intValue).toArray()), a.text());
    }

    @Test
    void streamingDeliversTheSameTextInPiecesAndBatchesMatchSingleRequests() {
        Answerer g = new Answerer(model, tok, EOT, 256);
        Answerer.Request r1 = new Answerer.Request(ask("Why grind fresh?"), Sampling.lima(), 15, List.of(), 7);
        Answerer.Request r2 = new Answerer.Request(ask("What is a ristretto, and how short is it?"), Sampling.lima(), 25, List.of(), 8);
        StringBuilder sb = new StringBuilder();
        Answerer.Answer streamed = g.stream(r1, sb::append);
        assertEquals(streamed.text(), sb.toString());
        List<Answerer.Answer> both = g.generate(List.of(r1, r2), (i, t) -> { });
        assertEquals(streamed, both.get(0));
        assertEquals(g.generate(r2), both.get(1));
    }

    @Test
    void stopStringsEndTheAnswerAndBadRequestsAreRejected() {
        Answerer g = new Answerer(model, tok, EOT, 256);
        Answerer.Answer free = g.generate(new Answerer.Request(ask("Tell me."), Sampling.greedy(), 30, List.of(), 1));
        String stop = free.text().substring(Math.min(3, free.text().length() - 1), Math.min(5, free.text().length()));
        Answerer.Answer cut = g.generate(new Answerer.Request(ask("Tell me."), Sampling.greedy(), 30, List.of(stop), 1));
        assertEquals("stop", cut.finish());
        assertTrue(free.text().startsWith(cut.text()) && !cut.text().contains(stop), cut.text());
        assertThrows(IllegalArgumentException.class, () -> new Answerer.Request(
                List.of(new Turn(Turn.USER, "a"), new Turn(Turn.ASSISTANT, "b")), Sampling.lima(), 5, List.of(), 1));
        assertThrows(IllegalArgumentException.class, () -> new Sampling(0.7f, 0f, 0, 1.2f, false));
    }
}
