"""Real English sentences for the transformer-encoder tests (tests/test_transformer.py).

EVALUATION: 72 sentences of 3 to about 60 words over many topics, statements and questions, with
near-paraphrase pairs (PARAPHRASE_PAIRS indexes them) so that ranking sentence pairs by similarity is
meaningful. CALIBRATION: other sentences, none of them in EVALUATION, for qruntime.quantize.
"""

EVALUATION = [
    # 0-9: near-paraphrase pairs (0/1, 2/3, 4/5, 6/7, 8/9)
    "The cat is sleeping on the warm windowsill.",
    "A cat naps on the sunny window ledge.",
    "How do I reset my email password?",
    "What are the steps to change the password of my mail account?",
    "The train to Edinburgh was delayed by forty minutes because of a signal failure near York.",
    "A signalling fault close to York held up the Edinburgh train for about forty minutes.",
    "Drinking enough water every day keeps you healthy.",
    "Staying well hydrated each day is good for your health.",
    "The central bank raised interest rates by half a percentage point on Tuesday.",
    "On Tuesday the central bank increased its interest rate by fifty basis points.",
    # 10-19: short ones
    "Good morning, everyone.",
    "Please close the door.",
    "Where is the nearest pharmacy?",
    "I love fresh bread.",
    "It is raining again.",
    "The meeting was cancelled.",
    "Turn left at the church.",
    "She plays the cello beautifully.",
    "Who wrote this poem?",
    "Dogs bark at night.",
    # 20-39: medium length, many topics
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar and oxygen inside the leaves of plants.",
    "The mitochondria produce most of the chemical energy that a cell needs to power its reactions.",
    "Our football team lost the final after a penalty shootout that lasted almost twenty minutes.",
    "The museum reopened last spring with a new wing devoted to medieval tapestries and manuscripts.",
    "Can you recommend a good recipe for a vegetarian lasagne that children will actually eat?",
    "My laptop battery drains very quickly since the last operating system update.",
    "Volcanic eruptions can cool the global climate for a year or two by filling the stratosphere with ash.",
    "The novel follows three sisters who inherit a crumbling farmhouse on the coast of Maine.",
    "Compilers translate source code written by programmers into instructions that a processor can execute.",
    "The hikers reached the summit just before sunrise and watched the clouds drift below them.",
    "Is it safe to eat eggs a week after the date printed on the box?",
    "The city council approved a plan to add protected bicycle lanes along the main avenue.",
    "Quantum computers use qubits, which can be in a superposition of zero and one at the same time.",
    "Grandmother kept every letter her brother sent from the war in a tin box under her bed.",
    "The orchestra rehearsed the symphony for weeks before the opening night of the festival.",
    "Which programming language should a beginner learn first if they want to analyse data?",
    "Heavy snow closed the mountain pass, and dozens of trucks waited overnight at the border.",
    "The startup raised twelve million dollars to build software that schedules hospital staff.",
    "Bees communicate the location of flowers to each other through a complicated waggle dance.",
    "He apologised for the late reply and promised to send the contract by Friday.",
    # 40-49: more paraphrase pairs (40/41, 42/43, 44/45, 46/47, 48/49)
    "The restaurant was so noisy that we could barely hear each other talk.",
    "It was too loud in the restaurant for us to have a conversation.",
    "Scientists discovered a new species of frog in the rainforest of Ecuador.",
    "A previously unknown frog species has been found by researchers in the Ecuadorian jungle.",
    "What time does the library open on Sundays?",
    "When does the library open on a Sunday?",
    "The company reported record profits despite the slowdown in global trade.",
    "Even though world trade slowed, the firm announced its highest earnings ever.",
    "Children learn languages much faster than adults do.",
    "Kids pick up new languages far more quickly than grown-ups.",
    # 50-59: long sentences
    "After months of negotiations that repeatedly broke down over fishing rights and border checks, the two "
    "governments finally signed an agreement that both sides described as a fair compromise, although farmers "
    "and fishermen in several coastal regions immediately announced protests against it.",
    "When I was a child we spent every summer at my uncle's house by the lake, where we fished from the old "
    "wooden pier in the mornings, swam until our lips turned blue, and listened to his stories about sailing "
    "around the world as a young man.",
    "The new treatment reduced the risk of a second heart attack by nearly a third in a trial of eleven thousand "
    "patients, but the researchers cautioned that the side effects, which included dizziness and muscle pain, "
    "need to be studied over a much longer period.",
    "To install the package, open a terminal, create a virtual environment in the project folder, activate it, "
    "and then run the installer with the option that also downloads the optional dependencies for plotting.",
    "Although the film received mixed reviews from critics, who found its plot confusing and its ending abrupt, "
    "audiences loved the performances of the two leads and it became the surprise hit of the summer.",
    "The river flooded the lower town for the third time in ten years, and residents are asking why the "
    "promised flood walls, which were funded in the budget two years ago, have still not been built.",
    "If you are travelling abroad for more than a month, remember to tell your bank, check whether your phone "
    "plan covers roaming, and make copies of your passport and insurance documents.",
    "Historians still debate whether the empire collapsed mainly because of economic decline, repeated "
    "invasions along its northern frontier, or the political instability that followed the death of its "
    "last strong ruler, and new evidence from tax records, coin hoards and letters found in a monastery "
    "library suggests that all three played a part, each making the others worse over several decades.",
    "Our neighbours adopted a shy grey rescue dog that hid under the sofa for a week, but now it greets "
    "everyone at the gate and follows their youngest son to school every morning.",
    "The engineers redesigned the bridge after wind tunnel tests showed that strong gusts from the valley "
    "could make the deck oscillate, adding heavy dampers beneath the road surface and widening the towers.",
    # 60-71: questions, instructions, varied registers
    "Why is the sky blue during the day but red at sunset?",
    "Could you send me the slides from yesterday's presentation?",
    "How many hours of sleep does a teenager need each night?",
    "Preheat the oven to two hundred degrees and grease a large baking tray.",
    "The stock market fell sharply after the announcement.",
    "Shares dropped steeply once the news was announced.",
    "My flight was cancelled, so I had to spend the night at the airport.",
    "Do electric cars really produce less pollution over their whole lifetime than petrol cars?",
    "The painting was sold at auction for far more than anyone had expected.",
    "Wash your hands before cooking.",
    "The committee will publish its final report early next year, after consulting teachers, parents and students.",
    "Thank you so much for your help with the move last weekend.",
]

# Index pairs of near-paraphrases in EVALUATION.
PARAPHRASE_PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (40, 41), (42, 43), (44, 45), (46, 47), (48, 49),
                    (64, 65)]

CALIBRATION = [
    "The weather forecast predicts sunshine for the rest of the week.",
    "Please remember to water the tomatoes while I am away.",
    "What is the capital city of Australia?",
    "Our office moved to a larger building near the harbour last month.",
    "The professor explained the theory of relativity using a train and two clocks.",
    "I forgot my umbrella on the bus this morning.",
    "Researchers are training robots to sort recycling more accurately than people can.",
    "The bakery on the corner sells the best croissants in town, but they are gone by nine.",
    "Can you explain how vaccines teach the immune system to recognise a virus?",
    "He repaired the old bicycle and rode it to the coast and back in a single day.",
    "Thousands of people gathered in the square to celebrate the national team's victory.",
    "The software update fixes a security flaw that let attackers read private messages.",
    "Turn off the lights.",
    "The glacier has retreated almost two kilometres since the first measurements were taken in the 1950s, and "
    "scientists expect the loss to accelerate as summers grow longer and warmer in the region.",
    "My sister is learning to play the violin and practises every evening after dinner.",
    "Does this train stop at the airport?",
]

assert len(EVALUATION) >= 64
assert not set(EVALUATION) & set(CALIBRATION)
