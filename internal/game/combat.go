// Combat: attacks on monsters, monster deaths and loot, player deaths.

package game

func (s *Scene) opAttack(p *playerState, op Attack, out []Effect) (Result, []Effect) {
	i, ok := s.monIx[op.Monster]
	if !ok {
		return errResult(ErrNotFound, "no monster %s in %s", op.Monster, s.def.ID), out
	}
	m := &s.mons[i]
	if m.hp == 0 {
		if s.replaying != nil {
			return s.replaying.deadResult(i, m.def.ID), out
		}
		return errResult(ErrMonsterDead, "%s is dead", m.def.ID), out
	}
	lvl := min(max(p.data.Level, 0), maxPlayerLevel)
	dmg := baseDamage + damagePerLvl*int64(lvl) + s.rng.intn(damageSpread)
	res := AttackResult{Monster: m.def.ID, Damage: dmg, MaxHP: m.def.HP}
	if dmg >= m.hp {
		res.Killed = true
		res.Loot, out = s.kill(m, p, out)
	} else {
		m.hp -= dmg
		if d := m.def.Damage; d > 0 {
			// A wounded monster hits back: between half and all of its damage.
			hit := d/2 + s.rng.intn(d-d/2+1)
			res.HitBack = hit
			p.hp -= hit
			if p.hp <= 0 {
				res.Died = true
				out = s.die(p, out)
			}
		}
	}
	res.HP = m.hp
	res.PlayerHP = p.hp
	if s.players[p.data.ID] == nil {
		res.PlayerHP = maxHP(p.data.Level) // sent home with the room's end
	}
	return res, out
}

// die respawns a killed player at the spawn point with full HP.
func (s *Scene) die(p *playerState, out []Effect) []Effect {
	p.hp = maxHP(p.data.Level)
	p.data.X, p.data.Y = s.def.Spawn.X, s.def.Spawn.Y
	p.touch()
	return append(out,
		Broadcast{Scene: s.def.ID, Body: Notice{Type: "player_died", ID: p.data.ID, Name: p.data.Name}},
		PositionChanged{Scene: s.def.ID, Kind: "player", ID: p.data.ID, X: p.data.X, Y: p.data.Y})
}

// kill marks m dead and gives its loot to killer (nil for a GM kill).
func (s *Scene) kill(m *monster, killer *playerState, out []Effect) ([]ItemCount, []Effect) {
	m.hp = 0
	m.respawnAt = 0
	if m.def.RespawnTicks > 0 {
		m.respawnAt = s.tick + m.def.RespawnTicks
	}
	n := Notice{Type: "monster_killed", ID: m.def.ID, Name: m.def.Name}
	var loot []ItemCount
	if killer != nil {
		n.By = killer.data.ID
		if m.def.GoldDrop > 0 {
			loot = append(loot, ItemCount{Item: goldItem, Count: m.def.GoldDrop})
		}
		for _, l := range m.def.Loot {
			loot = append(loot, ItemCount{Item: l.Item, Count: l.Count})
		}
		given := loot[:0:0]
		for _, l := range loot {
			if s.addItem(killer, l.Item, l.Count) == nil {
				s.led(l.Item).Minted += l.Count
				given = append(given, l)
			}
		}
		loot = given
		if m.def.Boss && killer.data.Level < maxPlayerLevel {
			killer.data.Level++
		}
		killer.touch()
		out = append(out, s.profile(killer))
	}
	out = append(out, Broadcast{Scene: s.def.ID, Body: n})
	if m.def.Boss && s.def.Kind == KindDungeon {
		out = s.endRoom(out)
	}
	return loot, out
}
