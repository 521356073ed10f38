package dev.limactl.data.curate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.limactl.data.DataFormatException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.commons.compress.archivers.sevenz.SevenZOutputFile;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** On the real coffee.stackexchange.com dump in ../shared/data. */
class StackExchangeSourceTest {
    static final Path COFFEE = Path.of("../../../shared/data/stackexchange/coffee.stackexchange.com/Posts.xml");

    static Map<String, String> bodies() {
        Map<String, String> out = new HashMap<>();
        StackExchangeSource.stream(COFFEE, (line, a) -> out.put(a.get("Id"), a.getOrDefault("Body", "")));
        return out;
    }

    static StackExchangeSource.Options paper() {
        return new StackExchangeSource.Options(10, 1200, 4096, true, new TextFilters(Recipe.FIRST_PERSON, Recipe.REFERENCES));
    }

    @Test
    void htmlBecomesMarkdownKeepingCodeBlocksAndListsDroppingLinksAndImages() {
        Map<String, String> b = bodies();
        String code = HtmlToMarkdown.convert(b.get("142"));  // a <pre><code> diagram
        assertTrue(code.contains("```\n    ||||||     < Tamper\n| [||||||||] | < Tamper 'head'"), code);
        assertTrue(code.contains("*using the same equipment*"), code);
        String list = HtmlToMarkdown.convert(b.get("41"));  // an <ol> whose items hold images
        assertTrue(list.contains("1. It is a funnel to make it easier"), list);
        assertTrue(list.contains("\n3. It is a stand"), list);
        assertFalse(list.contains("imgur") || list.contains("<img") || list.contains("!["), list);
        String links = HtmlToMarkdown.convert(b.get("4"));
        assertFalse(links.contains("href") || links.contains("http://i.imgur"), links);
        for (String body : b.values()) {
            String md = HtmlToMarkdown.convert(body);
            assertFalse(md.contains("<p>") || md.contains("</a>") || md.contains("<img"), md);
        }
    }

    @Test
    void everyFilterRuleHasRealPositiveAndNegativeCases() {
        List<Rejection> rejected = new ArrayList<>();
        List<StackExchangeSource.Candidate> c = StackExchangeSource.read("coffee.stackexchange.com", COFFEE, paper(), rejected::add);
        Map<String, Rejection> byId = new HashMap<>();
        rejected.forEach(r -> byId.put(r.id(), r));
        assertEquals(35, c.size() + rejected.size());  // the 35 questions whose top answer scores >= 10
        assertEquals("answer-too-short", byId.get("coffee.stackexchange.com/60").rule());   // "What is a shot?": 218 characters
        assertEquals("answer-too-long", byId.get("coffee.stackexchange.com/96").rule());    // cold brew: over 4,096
        assertEquals("first-person", byId.get("coffee.stackexchange.com/139").rule());      // Kopi Luwak
        assertFalse(c.isEmpty(), "some real answers pass every filter");
        TextFilters f = paper().filters();
        for (StackExchangeSource.Candidate k : c) {
            assertTrue(k.answerScore() >= 10);
            assertTrue(k.answerMarkdown().length() >= 1200 && k.answerMarkdown().length() <= 4096);
            assertNull(f.firstPerson(k.answerMarkdown()), k.url());
            assertNull(f.reference(k.answerMarkdown()), k.url());
            assertTrue(StackExchangeSource.isQuestionTitle(k.title()), k.title());
        }
        for (int i = 1; i < c.size(); i++) assertTrue(c.get(i - 1).questionScore() >= c.get(i).questionScore());
        // With the paper's thresholds relaxed, more of the same dump passes, and rules still apply.
        List<Rejection> looseRejected = new ArrayList<>();
        List<StackExchangeSource.Candidate> loose = StackExchangeSource.read("coffee.stackexchange.com", COFFEE,
                new StackExchangeSource.Options(3, 400, 4096, true, paper().filters()), looseRejected::add);
        assertTrue(loose.size() > c.size());
        java.util.Set<String> rules = new java.util.HashSet<>();
        looseRejected.forEach(r -> rules.add(r.rule()));
        for (String rule : List.of("answer-too-short", "answer-too-long", "first-person", "refers-to-other-answers",
                "title-not-self-contained")) {
            assertTrue(rules.contains(rule), "no real rejection for " + rule + ": " + rules);
        }
        Rejection ref = looseRejected.stream().filter(r -> r.rule().equals("refers-to-other-answers")).findFirst().orElseThrow();
        String phrase = ref.detail().replace("\"", "");
        assertTrue(Recipe.REFERENCES.contains(phrase), ref.toString());
        Rejection title = looseRejected.stream().filter(r -> r.rule().equals("title-not-self-contained")).findFirst().orElseThrow();
        assertFalse(StackExchangeSource.isQuestionTitle(title.detail()), title.toString());
        // A cap on retained questions keeps the best-scored ones and says so for the rest.
        List<Rejection> capped = new ArrayList<>();
        List<StackExchangeSource.Candidate> few = StackExchangeSource.read("coffee.stackexchange.com", COFFEE,
                new StackExchangeSource.Options(3, 400, 4096, true, paper().filters(), 10), capped::add);
        assertTrue(few.size() <= 10 && !few.isEmpty());
        assertEquals(loose.subList(0, few.size()), few);  // the best-scored passing questions, in order
        assertTrue(capped.stream().anyMatch(r -> r.rule().equals("not-in-top-questions")));
    }

    @Test
    void filtersMatchWholeWordsOutsideCode() {
        TextFilters f = new TextFilters(List.of("I", "my", "I'm"), List.of("as mentioned", "stack exchange"));
        assertEquals("I", f.firstPerson("Then I grind it."));
        assertEquals("My", f.firstPerson("My grinder is fine."));
        assertEquals("I'm", f.firstPerson("I'm sure."));
        assertNull(f.firstPerson("Myriad beans; it is fine. Use `my_var` or\n```\nmy = 1\n```"));
        assertEquals("as mentioned", f.reference("As mentioned above, tamp hard."));
        assertNull(f.reference("Nothing to see."));
    }

    @Test
    void readsTheSevenZipArchivesTheDumpsShipAs(@TempDir Path dir) throws Exception {
        Path ex = Files.createDirectories(dir.resolve("coffee.stackexchange.com"));
        Path z = ex.resolve("coffee.stackexchange.com.7z");
        try (SevenZOutputFile out = new SevenZOutputFile(z.toFile())) {
            out.putArchiveEntry(out.createArchiveEntry(COFFEE.toFile(), "Posts.xml"));
            out.write(Files.readAllBytes(COFFEE));
            out.closeArchiveEntry();
        }
        assertEquals(z, StackExchangeSource.postsFile(ex));
        List<StackExchangeSource.Candidate> a = StackExchangeSource.read("coffee.stackexchange.com", z, paper(), r -> { });
        List<StackExchangeSource.Candidate> b = StackExchangeSource.read("coffee.stackexchange.com", COFFEE, paper(), r -> { });
        assertEquals(b, a);
    }

    /**
     * Real dumps expand far more than the JDK parser's default cap of 50M entity characters; here the
     * cap is lowered to 10,000 through the JDK's own system property, which the reader must override.
     */
    @Test
    void streamsPastTheJdkParsersCapOnExpandedEntities(@TempDir Path dir) throws Exception {
        Path f = dir.resolve("Posts.xml");
        String body = "&lt;p&gt;" + "x&amp;y ".repeat(50) + "&lt;/p&gt;";
        try (var w = Files.newBufferedWriter(f)) {
            w.write("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<posts>\n");
            for (int i = 1; i <= 2_000; i++) w.write("  <row Id=\"" + i + "\" PostTypeId=\"1\" Score=\"1\" Body=\"" + body + "\" />\n");
            w.write("</posts>\n");
        }
        String old = System.getProperty("jdk.xml.totalEntitySizeLimit");
        System.setProperty("jdk.xml.totalEntitySizeLimit", "10000");
        try {
            long[] n = {0};
            StackExchangeSource.stream(f, (line, a) -> n[0]++);
            assertEquals(2_000, n[0]);
        } finally {
            if (old == null) System.clearProperty("jdk.xml.totalEntitySizeLimit");
            else System.setProperty("jdk.xml.totalEntitySizeLimit", old);
        }
    }

    @Test
    void malformedXmlNamesTheFileAndLine(@TempDir Path dir) throws Exception {
        Path bad = dir.resolve("Posts.xml");
        Files.writeString(bad, "<?xml version=\"1.0\"?>\n<posts>\n  <row Id=\"1\" PostTypeId=\"1\" Score=\"3\" />\n  <row Id=\"2\" PostTypeId=\"2\n</posts>\n");
        DataFormatException e = assertThrows(DataFormatException.class,
                () -> StackExchangeSource.read("x", bad, paper(), r -> { }));
        assertTrue(e.getMessage().startsWith(bad + ":5: malformed XML"), e.getMessage());
        Files.writeString(bad, "<posts>\n<row PostTypeId=\"2\" Score=\"12\" ParentId=\"x\" Id=\"3\"/>\n</posts>");
        e = assertThrows(DataFormatException.class, () -> StackExchangeSource.read("x", bad, paper(), r -> { }));
        assertTrue(e.getMessage().contains(":2: row attribute ParentId is \"x\""), e.getMessage());
        e = assertThrows(DataFormatException.class, () -> StackExchangeSource.postsFile(dir.resolve("empty-exchange")));
        // another file under the name, or a dump with no rows: said, not 0 candidates without a word
        Files.writeString(bad, "<?xml version=\"1.0\"?>\n<users>\n  <row Id=\"1\" />\n</users>\n");
        e = assertThrows(DataFormatException.class, () -> StackExchangeSource.read("x", bad, paper(), r -> { }));
        assertTrue(e.getMessage().contains(":2: the root element is <users>, not <posts>"), e.getMessage());
        Files.writeString(bad, "<?xml version=\"1.0\"?>\n<posts>\n</posts>\n");
        e = assertThrows(DataFormatException.class, () -> StackExchangeSource.read("x", bad, paper(), r -> { }));
        assertTrue(e.getMessage().contains("holds no <row> elements"), e.getMessage());
        byte[] utf = "\uFEFF<?xml version=\"1.0\"?>\n<posts>\n  <row Id=\"1\" PostTypeId=\"1\" Body=\"caf\u00e9\" />\n</posts>\n"
                .getBytes(java.nio.charset.StandardCharsets.UTF_8);
        Files.write(bad, utf);  // a BOM is fine
        StackExchangeSource.read("x", bad, paper(), r -> { });
        for (int i = 0; i < utf.length; i++) if (utf[i] == (byte) 0xA9) utf[i] = 'A';  // the lead byte of é, then 'A': not UTF-8
        Files.write(bad, utf);
        e = assertThrows(DataFormatException.class, () -> StackExchangeSource.read("x", bad, paper(), r -> { }));
        assertTrue(e.getMessage().startsWith(bad + ":3: not valid UTF-8 at byte"), e.getMessage());
    }
}
