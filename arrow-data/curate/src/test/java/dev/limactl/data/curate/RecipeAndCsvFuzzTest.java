package dev.limactl.data.curate;

import dev.limactl.data.DataFormatException;
import java.nio.file.Files;
import java.nio.file.Path;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * The recipe reader and the CSV sources on hostile text (property-based, bounded tries): a recipe
 * either parses or fails with a DataFormatException without Java type names; a wikiHow CSV either
 * reads or fails with a DataFormatException naming the file.
 */
class RecipeAndCsvFuzzTest {
    @Provide
    Arbitrary<String> yamlish() {
        Arbitrary<String> piece = Arbitraries.of("seed: ", "1", "-3", "x", "sources:", "\n  - ", "{type: ", "stackexchange", "wikihow",
                "manual", "jsonl", "super-ni", "writingprompts", "split: ", "train", "dev", "path: ", "p", "count: ", "groups: ",
                "{stem: 1}", "}", ", ", "[", "]", "\n", "on_error: ", "skip", "dedup: ", "{threshold: 2}", "temperature: ", "0", "null",
                "~", "&a", "*a", "!!binary", "min_answer_score: ", "1.5", "'", "\"");
        return Arbitraries.oneOf(piece.list().ofMaxSize(30).map(l -> String.join("", l)), Arbitraries.strings().ofMaxLength(120));
    }

    @Property(tries = 400, seed = FuzzSeed.SEED)
    void recipesParseOrFailWithANamedDataError(@ForAll("yamlish") String yaml) {
        try {
            Recipe.parse(yaml, "r.yaml");
        } catch (DataFormatException e) {
            if (!e.getMessage().startsWith("r.yaml")) throw new AssertionError("not named: " + e.getMessage());
            if (e.getMessage().contains("dev.limactl") || e.getMessage().contains("java.")) throw new AssertionError("Java names: " + e.getMessage());
        }
    }

    @Provide
    Arbitrary<String> csvish() {
        Arbitrary<String> piece = Arbitraries.of("title,heading,paragraph\n", "How to X", ",", "\"", "\"\"", "\n", "\r\n", "Step.", "text",
                "a,b,c,d", "", "\u0000", "é");
        return piece.list().ofMaxSize(30).map(l -> String.join("", l));
    }

    @Property(tries = 200, seed = FuzzSeed.SEED)
    void wikiHowCsvReadsOrFailsWithANamedDataError(@ForAll("csvish") String csv, @ForAll boolean skipBad) throws Exception {
        Path f = Files.createTempFile("lima-fuzz", ".csv");
        try {
            Files.writeString(f, csv);
            WikiHowSource.read(f, skipBad, r -> { });
        } catch (DataFormatException e) {
            if (!e.getMessage().contains(f.toString())) throw new AssertionError("not named: " + e.getMessage());
        } finally {
            Files.deleteIfExists(f);
        }
    }
}
